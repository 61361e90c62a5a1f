//! A Debian binary package laid out by hand: a staging tree, its `DEBIAN/` control files
//! (control, conffiles, md5sums, maintainer scripts) and `dpkg-deb --build`. What goes in it
//! is `package.rs`'s business.
use crate::util;
use anyhow::{Context as _, Result, bail};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What `DEBIAN/control` says besides what the staging tree tells (size, architecture,
/// dependencies).
pub struct Control {
    pub package: &'static str,
    pub version: String,
    pub section: &'static str,
    /// Dependencies besides libc6 (which the binaries' symbol versions give); empty: none.
    pub depends: &'static str,
    /// A `Recommends:` line's value; empty: none.
    pub recommends: &'static str,
    /// The one-line synopsis.
    pub summary: &'static str,
    /// The extended description, plain lines (indented here).
    pub description: &'static str,
}

/// A package being laid out under `dir`.
pub struct Staging {
    dir: PathBuf,
    control: Control,
    conffiles: Vec<String>,
    /// The newest `GLIBC_2.N` symbol version any binary needs: the `libc6 (>= 2.N)`
    /// dependency.
    glibc_minor: u32,
}

impl Staging {
    /// An empty staging tree at `dir` (anything there before is removed).
    pub fn new(dir: &Path, control: Control) -> Result<Staging> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("DEBIAN"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Staging {
            dir: dir.to_path_buf(),
            control,
            conffiles: Vec::new(),
            glibc_minor: 0,
        })
    }

    /// Where `dest` (relative to /) goes in the tree, with its parent directories made.
    fn dest(&self, dest: &str) -> Result<PathBuf> {
        let p = self.dir.join(dest.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        Ok(p)
    }

    /// Copies `src` to `/dest` with `mode`.
    pub fn file(&mut self, src: &Path, dest: &str, mode: u32) -> Result<()> {
        let p = self.dest(dest)?;
        std::fs::copy(src, &p)
            .with_context(|| format!("copying {} to {}", src.display(), p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", p.display()))
    }

    /// An executable, stripped of its symbol table (the packages' binaries shrink to about a
    /// third); its glibc symbol versions raise the `libc6` dependency.
    pub fn binary(&mut self, src: &Path, dest: &str) -> Result<()> {
        self.file(src, dest, 0o755)?;
        let p = self.dir.join(dest);
        util::run(Command::new("strip").arg("--strip-unneeded").arg(&p))
            .context("strip (binutils) is needed to package")?;
        let bytes = std::fs::read(&p).with_context(|| format!("{}", p.display()))?;
        self.glibc_minor = self.glibc_minor.max(newest_glibc(&bytes));
        Ok(())
    }

    /// A configuration file: dpkg keeps an admin's edits on upgrade and removes it on purge.
    pub fn conffile(&mut self, src: &Path, dest: &str) -> Result<()> {
        self.file(src, dest, 0o644)?;
        self.conffiles
            .push(format!("/{}", dest.trim_start_matches('/')));
        Ok(())
    }

    /// A man page, compressed (`gzip -9n`: no name or time stamp, so rebuilds match).
    pub fn man_page(&mut self, src: &Path, dest: &str) -> Result<()> {
        let p = self.dest(dest)?;
        gzip_to(src, &p)
    }

    /// A maintainer script (`postinst`, `prerm`, `postrm`).
    pub fn script(&mut self, src: &Path, name: &str) -> Result<()> {
        let p = self.dir.join("DEBIAN").join(name);
        std::fs::copy(src, &p).with_context(|| format!("copying {}", src.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", p.display()))
    }

    /// `/usr/share/doc/PACKAGE/copyright` (machine-readable format) and
    /// `changelog.Debian.gz`, which Debian policy asks of every package.
    pub fn copyright_and_changelog(&mut self) -> Result<()> {
        let pkg = self.control.package;
        let doc = format!("usr/share/doc/{pkg}");
        let copyright = self.dest(&format!("{doc}/copyright"))?;
        std::fs::write(
            &copyright,
            format!(
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
                 Upstream-Name: airlock\n\n\
                 Files: *\nCopyright: the airlock developers\nLicense: {}\n \
                 See /usr/share/common-licenses/Apache-2.0 and\n \
                 https://opensource.org/license/mit for the MIT license.\n",
                env!("CARGO_PKG_LICENSE")
            ),
        )
        .with_context(|| format!("{}", copyright.display()))?;
        let plain = self.dir.join("DEBIAN/.changelog");
        std::fs::write(
            &plain,
            format!(
                "{pkg} ({}) unstable; urgency=medium\n\n  \
                 * Built by cargo xtask package.\n\n \
                 -- airlock developers <airlock@localhost>  {}\n",
                self.control.version,
                util::stdout_of(Command::new("date").arg("-R"))?.trim()
            ),
        )?;
        let gz = self.dest(&format!("{doc}/changelog.Debian.gz"))?;
        gzip_to(&plain, &gz)?;
        std::fs::remove_file(&plain)?;
        Ok(())
    }

    /// Writes the control files and builds `OUT/PACKAGE_VERSION_ARCH.deb`.
    pub fn build(self, out: &Path) -> Result<PathBuf> {
        let files = tree_files(&self.dir)?;
        let mut installed = 0u64;
        for f in &files {
            installed += std::fs::metadata(self.dir.join(f))?.len().div_ceil(1024);
        }
        let arch = crate::package::architecture()?;
        let c = &self.control;
        let mut control = format!(
            "Package: {}\nVersion: {}\nArchitecture: {arch}\n\
             Maintainer: airlock developers <airlock@localhost>\n\
             Installed-Size: {installed}\nSection: {}\nPriority: optional\n\
             Homepage: https://github.com/airlock-dev/airlock\n",
            c.package, c.version, c.section
        );
        let mut depends: Vec<String> = Vec::new();
        if self.glibc_minor > 0 {
            depends.push(format!("libc6 (>= 2.{})", self.glibc_minor));
        }
        if !c.depends.is_empty() {
            depends.push(c.depends.to_string());
        }
        if !depends.is_empty() {
            writeln!(control, "Depends: {}", depends.join(", "))?;
        }
        if !c.recommends.is_empty() {
            writeln!(control, "Recommends: {}", c.recommends)?;
        }
        writeln!(control, "Description: {}", c.summary)?;
        for line in c.description.lines() {
            writeln!(control, " {line}")?;
        }
        let debian = self.dir.join("DEBIAN");
        std::fs::write(debian.join("control"), control)?;
        if !self.conffiles.is_empty() {
            std::fs::write(debian.join("conffiles"), self.conffiles.join("\n") + "\n")?;
        }
        let sums = util::stdout_of(
            Command::new("md5sum")
                .arg("--")
                .args(&files)
                .current_dir(&self.dir),
        )?;
        std::fs::write(debian.join("md5sums"), sums)?;
        let deb = out.join(format!("{}_{}_{arch}.deb", c.package, c.version));
        util::run(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zxz", "--build"])
                .arg(&self.dir)
                .arg(&deb)
                .stdout(Stdio::null()),
        )?;
        Ok(deb)
    }
}

/// `gzip -9n < src > dest`.
fn gzip_to(src: &Path, dest: &Path) -> Result<()> {
    let input = std::fs::File::open(src).with_context(|| format!("{}", src.display()))?;
    let output = std::fs::File::create(dest).with_context(|| format!("{}", dest.display()))?;
    let st = Command::new("gzip")
        .arg("-9n")
        .stdin(input)
        .stdout(output)
        .status()
        .context("gzip")?;
    if !st.success() {
        bail!("gzip {}: {st}", src.display());
    }
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Regular files under `root`, relative, sorted, without `DEBIAN/`.
fn tree_files(root: &Path) -> Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(root)? {
        let p = e?.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "DEBIAN") {
            walk(root, &p, &mut out)?;
        }
    }
    out.sort();
    Ok(out)
}

/// The highest `N` of the `GLIBC_2.N` version strings in an ELF file's bytes (its dynamic
/// symbol versions); 0 when there are none.
pub fn newest_glibc(elf: &[u8]) -> u32 {
    const TAG: &[u8] = b"GLIBC_2.";
    let mut best = 0;
    let mut i = 0;
    while let Some(off) = elf[i..].windows(TAG.len()).position(|w| w == TAG) {
        let start = i + off + TAG.len();
        let digits = elf[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        // A version is followed by NUL or a further ".N" (GLIBC_2.2.5): the minor is the
        // first number.
        if let Ok(n) = std::str::from_utf8(&elf[start..start + digits])
            .unwrap_or("")
            .parse::<u32>()
        {
            best = best.max(n);
        }
        i = start;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::newest_glibc;

    #[test]
    fn newest_glibc_takes_the_highest_minor_of_all_version_strings() {
        let elf = b"\0GLIBC_2.2.5\0xxGLIBC_2.34\0GLIBC_2.17\0GLIBC_PRIVATE\0GLIBC_2.";
        assert_eq!(newest_glibc(elf), 34);
        assert_eq!(newest_glibc(b"no versions"), 0);
    }
}
