//! The text data sets: TREC question classification, SMS Spam, Tatoeba pairs (text, and a
//! zip archive holding `fra.txt`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_nlp::data::read_trec(kiln_fuzz::file("train_5500.label", data));
    let _ = kiln_nlp::data::read_sms_spam(kiln_fuzz::file("SMSSpamCollection", data));
    if let Ok(pairs) = kiln_nlp::data::read_tatoeba(kiln_fuzz::file("fra.txt", data)) {
        let _ = kiln_nlp::data::filter_pairs(&pairs, 10);
    }
    let _ = kiln_nlp::data::read_tatoeba(kiln_fuzz::file("fra-eng.zip", data));
});
