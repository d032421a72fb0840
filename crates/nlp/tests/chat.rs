//! Chat templates against transformers' `apply_chat_template`: the fixtures under
//! `tests/fixtures/chat/` (ChatML in `tokenizer_config.json`, a Llama 3 style template in
//! `chat_template.jinja` that prints tool schemas, Qwen2.5's tool-calling form with an
//! assistant's tool calls and a tool's result, Mistral's with a role check that raises) and
//! what transformers rendered from them (`make_chat_fixtures.py`).

use std::path::PathBuf;

use kiln_nlp::chat::{ChatMessage, ChatTemplate};

#[test]
fn templates_render_as_transformers_does() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat");
    let text = std::fs::read_to_string(root.join("reference.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let conversations: Vec<Vec<ChatMessage>> =
        serde_json::from_value(r["conversations"].clone()).unwrap();
    let tools: Vec<serde_json::Value> = r["tools"].as_array().unwrap().clone();
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 24);
    assert!(cases.iter().filter(|c| c["tools"] == true).count() >= 6);
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let template = ChatTemplate::from_folder(root.join(name)).unwrap().unwrap();
        let messages = &conversations[case["conversation"].as_u64().unwrap() as usize];
        let generation = case["add_generation_prompt"].as_bool().unwrap();
        let with_tools = case["tools"].as_bool().unwrap();
        let got = if with_tools {
            template.render_with_tools(messages, Some(&tools), generation)
        } else {
            template.render(messages, generation)
        };
        match (case["text"].as_str(), case["error"].as_str()) {
            (Some(want), _) => assert_eq!(got.unwrap(), want, "{case}"),
            (None, Some(message)) => {
                let e = got.unwrap_err().to_string();
                assert!(
                    e.contains(message) && e.contains("tokenizer_config.json"),
                    "{e}"
                );
            }
            _ => panic!("case without text or error: {case}"),
        }
    }
}
