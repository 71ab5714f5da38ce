//! `ddbstream`: tail a DynamoDB stream, replicate a table to SQLite, show a consumer's status.
fn main() {
    eprintln!("ddbstream: not built yet");
    std::process::exit(2);
}
