//! Rebuilds when a migration is added: `sqlx::migrate!` embeds the migrations directories at
//! compile time, and cargo does not notice a new file in them unless told to look.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
