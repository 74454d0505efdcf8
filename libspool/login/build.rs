//! libxcrypt (`crypt_r`, `crypt_gensalt_rn`) is linked here and nowhere else: `links = "crypt"`
//! in the manifest makes this crate the one owner of the native library in the build graph.

fn main() {
    println!("cargo:rustc-link-lib=crypt");
}
