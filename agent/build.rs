//! Builds the eBPF programs (ebpf-programs/) for the bpf target with the nightly toolchain and
//! bpf-linker, and puts the object in OUT_DIR where `include_bytes_aligned!` finds it.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = packages
        .into_iter()
        .find(|p| p.name.as_str() == "airlock-ebpf")
        .ok_or_else(|| anyhow!("airlock-ebpf package not found in the workspace"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", pkg.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: pkg.name.as_str(),
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
