//! The style vocabulary: human names of the 26 built-in styles (read off
//! `gpu-node sheet`), a style's name for people, and the mapping from a text
//! prompt to the closest preset for workers without a text-to-image model.
//! It lives with the style parameters so every tier (web, stats, workers)
//! names styles alike without depending on the neural-style network.

use crate::style::{PRESET_COUNT as STYLE_COUNT, StyleParams, StyleSource};

/// Short names, by style index.
pub const NAMES: [&str; STYLE_COUNT] = [
    "Sunny Pastel",
    "Bold Outline",
    "Charcoal",
    "Electric",
    "Fresco",
    "Ember",
    "Indigo Cells",
    "Primary",
    "Watercolor",
    "Tapestry",
    "Terracotta",
    "Ochre Ink",
    "Lavender",
    "Fauve",
    "Frost",
    "Stained Glass",
    "Impasto",
    "Mosaic",
    "Sepia",
    "Starry Swirl",
    "Crimson",
    "Candy",
    "Poster",
    "Moss",
    "Etching",
    "Gilded",
];

/// Words that describe each style besides its name, for prompt matching.
const KEYWORDS: [&[&str]; STYLE_COUNT] = [
    &["sun", "sunny", "pastel", "yellow", "light", "soft"],
    &[
        "pop",
        "comic",
        "cartoon",
        "outline",
        "lines",
        "lichtenstein",
        "bold",
    ],
    &[
        "charcoal",
        "sketch",
        "pencil",
        "drawing",
        "grey",
        "gray",
        "monochrome",
        "black",
        "white",
    ],
    &[
        "abstract",
        "kandinsky",
        "electric",
        "neon",
        "vivid",
        "energetic",
        "expressionist",
    ],
    &["fresco", "warm", "renaissance", "mural"],
    &["ember", "autumn", "fire", "orange", "warm", "fall"],
    &["indigo", "cells", "dots", "pattern", "texture", "night"],
    &[
        "primary", "blocks", "bold", "colors", "colours", "matisse", "cutout",
    ],
    &[
        "watercolor",
        "watercolour",
        "wash",
        "paint",
        "delicate",
        "white",
    ],
    &[
        "tapestry",
        "floral",
        "flowers",
        "textile",
        "wallpaper",
        "teal",
        "morris",
    ],
    &["terracotta", "rust", "brown", "earth", "clay", "ancient"],
    &["ochre", "ink", "woodcut", "print", "yellow"],
    &["lavender", "lilac", "purple", "dreamy", "soft"],
    &["fauve", "fauvism", "green", "wild", "expressionist"],
    &["frost", "ice", "winter", "cold", "pale", "snow"],
    &["stained", "glass", "church", "window", "lines"],
    &[
        "impasto",
        "brushstroke",
        "brush",
        "strokes",
        "oil",
        "impressionist",
        "monet",
    ],
    &[
        "mosaic",
        "tiles",
        "mondrian",
        "grid",
        "geometric",
        "squares",
    ],
    &["sepia", "vintage", "old", "photo", "antique", "retro"],
    &[
        "starry",
        "night",
        "van",
        "gogh",
        "swirl",
        "swirls",
        "blue",
        "impressionist",
    ],
    &["crimson", "red", "blood", "fiery", "passion"],
    &["candy", "pink", "sweet", "pop", "bubblegum"],
    &["poster", "print", "screen", "graphic", "propaganda"],
    &["moss", "forest", "dark", "green", "shadow", "moody"],
    &["etching", "engraving", "blue", "cream", "ink", "lines"],
    &[
        "gilded",
        "gold",
        "golden",
        "klimt",
        "byzantine",
        "icon",
        "ornate",
    ],
];

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
            .filter(|w| {
                name.split(' ').any(|n| n == w.as_str()) || KEYWORDS[i].contains(&w.as_str())
            })
            .count();
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

/// A style as people read it: "Starry Swirl + Mosaic" (the larger part
/// first), "a picture", or the prompt in quotes.
pub fn style_name(params: &StyleParams) -> String {
    match &params.source {
        StyleSource::Preset { mix } => {
            let mut parts: Vec<_> = mix.parts().to_vec();
            parts.sort_by(|a, b| b.1.total_cmp(&a.1));
            parts
                .iter()
                .map(|(i, _)| NAMES[*i])
                .collect::<Vec<_>>()
                .join(" + ")
        }
        StyleSource::Image { .. } => "a picture".into(),
        StyleSource::Prompt { prompt, .. } => format!("\u{201c}{prompt}\u{201d}"),
    }
}

/// The index of a style by its name (case-insensitive).
pub fn by_name(name: &str) -> Option<usize> {
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_map_to_plausible_styles() {
        assert_eq!(
            NAMES[closest_to_prompt("Van Gogh starry night")],
            "Starry Swirl"
        );
        assert_eq!(NAMES[closest_to_prompt("a mosaic of tiles")], "Mosaic");
        assert_eq!(NAMES[closest_to_prompt("old vintage photo")], "Sepia");
        assert_eq!(closest_to_prompt("zzz"), 0);
    }

    #[test]
    fn names_are_unique_and_found() {
        for (i, n) in NAMES.iter().enumerate() {
            assert_eq!(by_name(n), Some(i));
        }
    }
}
