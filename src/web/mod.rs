//! The pages: a thin edge over the same engine and store as the CLI.
pub mod settings;
pub use settings::WebSettings;
