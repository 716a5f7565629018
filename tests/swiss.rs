//! The book's Swiss corpus, bit-exact: numpy's permutation and the German statistics table.

mod common;

use std::collections::BTreeMap;
use xner::data::{self, PanxDir};
use xner::shuffle;

#[test]
fn permutations_match_every_numpy_test_vector() {
    let path = common::shared_dir().join("testvectors/numpy_permutation.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let seed = case["seed"].as_u64().unwrap();
        let n = case["n"].as_u64().unwrap() as usize;
        let expected: Vec<usize> =
            case["permutation"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(shuffle::permutation(seed, n), expected, "seed {seed}, n {n}");
    }
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn german_statistics_reproduce_the_book() {
    let panx = PanxDir::new(common::panx_dir());
    let stats = data::split_stats(&panx, &["de".to_string()]).unwrap();
    // The seed notebook's table (chapter 4, In [13]).
    let book = [
        ("train", 12580, counts(&[("LOC", 6186), ("ORG", 5366), ("PER", 5810)])),
        ("validation", 6290, counts(&[("LOC", 3172), ("ORG", 2683), ("PER", 2893)])),
        ("test", 6290, counts(&[("LOC", 3180), ("ORG", 2573), ("PER", 3071)])),
    ];
    for (row, (split, rows, entities)) in stats.iter().zip(book) {
        assert_eq!(row.split, split);
        assert_eq!(row.rows, rows, "{split} rows");
        assert_eq!(row.entities, entities, "{split} entities");
    }
}

#[test]
fn training_sizes_of_every_language_and_the_first_german_example() {
    let panx = PanxDir::new(common::panx_dir());
    for (lang, rows) in [("de", 12580), ("fr", 4580), ("it", 1680), ("en", 1180)] {
        assert_eq!(panx.load(lang, "train").unwrap().len(), rows, "{lang}");
    }
    let de = panx.load("de", "train").unwrap();
    assert_eq!(
        de.sentences[0].words.join(" "),
        "2.000 Einwohnern an der Danziger Bucht in der polnischen Woiwodschaft Pommern ."
    );
    assert_eq!(de.sentences[0].label_ids, vec![0, 0, 0, 0, 5, 6, 0, 0, 5, 5, 6, 0]);
}
