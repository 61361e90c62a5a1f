//! `sqlx::migrate!` embeds server/migrations/ at build time; cargo must rebuild when a
//! migration changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
