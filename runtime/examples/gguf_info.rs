//! Lists a GGUF file's metadata and tensors: `cargo run --example gguf_info -- FILE [FILTER]`.

use qwen3_tts::model_file::GgufFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: gguf_info FILE [FILTER]")?;
    let filter = args.get(1).map(String::as_str).unwrap_or("");
    let file = GgufFile::open(path)?;
    for key in file.header().keys() {
        if key.contains(filter) && !key.starts_with("tokenizer.ggml.") {
            let value = format!("{:?}", file.get(&key));
            println!("{key} = {}", &value[..value.len().min(120)]);
        }
    }
    for t in file.tensors() {
        if t.name.contains(filter) {
            println!("{:<60} {:?} {:?}", t.name, file.tensor_type(&t.name)?, t.ne);
        }
    }
    Ok(())
}
