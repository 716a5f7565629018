//! Error analysis as in the book: the loss of every labelled token; totals and means grouped
//! by input token and by gold label; the sentences with the highest total loss token by token;
//! a normalised confusion matrix of the tags; and a label-noise report (the sentences whose
//! gold labels the model most confidently contradicts).

use std::collections::HashMap;

use serde::Serialize;

use crate::align::AlignedCorpus;
use crate::data::{Corpus, LabelSet};
use crate::eval::SentencePrediction;

/// One labelled word: its first subword, gold and predicted tag, loss and confidence.
#[derive(Clone, Debug, Serialize)]
pub struct TokenRow {
    pub word: String,
    pub token: String,
    pub gold: String,
    pub pred: String,
    pub loss: f32,
    pub confidence: f32,
}

/// Loss statistics of one group (an input token or a gold label).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Group {
    pub key: String,
    pub count: usize,
    pub mean: f64,
    pub sum: f64,
}

/// A sentence of the worst-loss or label-noise list.
#[derive(Clone, Debug, Serialize)]
pub struct SentenceRow {
    /// Row of the analysed split.
    pub index: usize,
    /// Total loss (worst list) or the highest confidence of a contradicting prediction
    /// (label-noise list).
    pub score: f64,
    pub tokens: Vec<TokenRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    pub labels: Vec<String>,
    pub tokens: usize,
    /// Input tokens sorted by total loss, largest first.
    pub by_token: Vec<Group>,
    /// Gold labels sorted by mean loss, largest first.
    pub by_label: Vec<Group>,
    /// Sentences sorted by total loss, largest first.
    pub worst: Vec<SentenceRow>,
    /// Sentences whose gold labels the model contradicts most confidently.
    pub label_noise: Vec<SentenceRow>,
    /// Counts: rows gold label, columns predicted label.
    pub confusion_counts: Vec<Vec<usize>>,
    /// Each row divided by its total (rows without support stay 0), as sklearn's
    /// `confusion_matrix(normalize="true")`.
    pub confusion: Vec<Vec<f64>>,
}

fn group(rows: impl Iterator<Item = (String, f32)>) -> Vec<Group> {
    let mut acc: HashMap<String, (usize, f64)> = HashMap::new();
    for (key, loss) in rows {
        let e = acc.entry(key).or_default();
        e.0 += 1;
        e.1 += loss as f64;
    }
    acc.into_iter().map(|(key, (count, sum))| Group { key, count, mean: sum / count as f64, sum }).collect()
}

/// Every labelled word of every sentence with its first subword, gold and predicted tag, loss
/// and confidence (`corpus` gives the words, `aligned` the subwords, in the same order).
pub fn token_rows(
    corpus: &Corpus,
    aligned: &AlignedCorpus,
    predictions: &[SentencePrediction],
    labels: &LabelSet,
) -> Vec<Vec<TokenRow>> {
    predictions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (sentence, words) = (&aligned.sentences[i], &corpus.sentences[i].words);
            (0..p.gold.len())
                .map(|k| {
                    let pos = p.positions[k];
                    let word = sentence.word_ids[pos].and_then(|w| words.get(w as usize)).cloned().unwrap_or_default();
                    TokenRow {
                        word,
                        token: sentence.tokens[pos].clone(),
                        gold: labels.name(p.gold[k]).to_string(),
                        pred: labels.name(p.pred[k]).to_string(),
                        loss: p.loss[k],
                        confidence: p.confidence[k],
                    }
                })
                .collect()
        })
        .collect()
}

/// The token rows as CSV (`sentence,word,token,gold,pred,loss,confidence`).
pub fn tokens_csv(rows: &[Vec<TokenRow>]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut csv = String::from("sentence,word,token,gold,pred,loss,confidence\n");
    for (i, sentence) in rows.iter().enumerate() {
        for t in sentence {
            csv += &format!(
                "{i},{},{},{},{},{:.6},{:.6}\n",
                quote(&t.word),
                quote(&t.token),
                t.gold,
                t.pred,
                t.loss,
                t.confidence
            );
        }
    }
    csv
}

/// Builds the analysis from the token rows (`token_rows`) and the predictions they came from;
/// lists keep the `top` largest.
pub fn analyze(rows: &[Vec<TokenRow>], predictions: &[SentencePrediction], labels: &LabelSet, top: usize) -> Analysis {
    let all = || rows.iter().flatten();
    let mut by_token = group(all().map(|r| (r.token.clone(), r.loss)));
    by_token.sort_by(|a, b| b.sum.total_cmp(&a.sum).then_with(|| a.key.cmp(&b.key)));
    by_token.truncate(top);
    let mut by_label = group(all().map(|r| (r.gold.clone(), r.loss)));
    by_label.sort_by(|a, b| b.mean.total_cmp(&a.mean).then_with(|| a.key.cmp(&b.key)));

    let ranked = |score: &dyn Fn(&[TokenRow]) -> Option<f64>| {
        let mut list: Vec<SentenceRow> = rows
            .iter()
            .enumerate()
            .filter_map(|(index, r)| score(r).map(|s| SentenceRow { index, score: s, tokens: r.clone() }))
            .collect();
        list.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.index.cmp(&b.index)));
        list.truncate(top);
        list
    };
    let worst = ranked(&|r| Some(r.iter().map(|t| t.loss as f64).sum()));
    let label_noise = ranked(&|r| r.iter().filter(|t| t.pred != t.gold).map(|t| t.confidence as f64).reduce(f64::max));

    let n = labels.len();
    let mut counts = vec![vec![0usize; n]; n];
    for p in predictions {
        for (&g, &q) in p.gold.iter().zip(&p.pred) {
            counts[g][q] += 1;
        }
    }
    let confusion = counts
        .iter()
        .map(|row| {
            let total: usize = row.iter().sum();
            row.iter().map(|&c| if total == 0 { 0.0 } else { c as f64 / total as f64 }).collect()
        })
        .collect();
    Analysis {
        labels: labels.names().to_vec(),
        tokens: all().count(),
        by_token,
        by_label,
        worst,
        label_noise,
        confusion_counts: counts,
        confusion,
    }
}

/// The normalised confusion matrix as an SVG heat map (blues, as the book's plot).
pub fn confusion_svg(labels: &[String], matrix: &[Vec<f64>]) -> String {
    let (cell, left, top) = (64.0, 80.0, 40.0);
    let n = labels.len() as f64;
    let (w, h) = (left + cell * n + 20.0, top + cell * n + 70.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">Normalized confusion matrix</text>\n",
        left + cell * n / 2.0
    );
    for (i, row) in matrix.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            // White → dark blue; dark cells get white text.
            let shade = |lo: f64, hi: f64| (lo + (hi - lo) * v).round() as u8;
            let (x, y) = (left + cell * j as f64, top + cell * i as f64);
            svg += &format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({},{},{})\" stroke=\"#ccc\"/>\n\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{}\">{v:.2}</text>\n",
                shade(247.0, 8.0),
                shade(251.0, 48.0),
                shade(255.0, 107.0),
                x + cell / 2.0,
                y + cell / 2.0 + 4.0,
                if v > 0.5 { "white" } else { "black" }
            );
        }
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            left - 6.0,
            top + cell * i as f64 + cell / 2.0 + 4.0,
            labels[i]
        );
    }
    for (j, l) in labels.iter().enumerate() {
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{l}</text>\n",
            left + cell * j as f64 + cell / 2.0,
            top + cell * n + 18.0
        );
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">predicted label</text>\n\
         <text x=\"14\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">true label</text>\n</svg>\n",
        left + cell * n / 2.0,
        top + cell * n + 44.0,
        top + cell * n / 2.0,
        top + cell * n / 2.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_sum_and_average() {
        let mut g = group([("a".to_string(), 1.0), ("b".to_string(), 4.0), ("a".to_string(), 3.0)].into_iter());
        g.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(g[0], Group { key: "a".into(), count: 2, mean: 2.0, sum: 4.0 });
        assert_eq!(g[1].count, 1);
    }

    #[test]
    fn svg_has_a_cell_per_entry() {
        let labels = vec!["O".to_string(), "B-PER".to_string()];
        let svg = confusion_svg(&labels, &[vec![0.9, 0.1], vec![0.25, 0.75]]);
        assert_eq!(svg.matches("<rect x=").count(), 4);
        assert!(svg.contains(">0.75<") && svg.starts_with("<svg"));
    }
}
