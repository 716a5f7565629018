//! Tagging schemes: IOB1 (CoNLL-2003's original), IOB2 (what xner's models predict), BIOES and
//! BILOU. Every corpus is converted to IOB2 when it is read; sequences that break their scheme's
//! rules are counted and reported, never silently repaired (the conversion keeps an ill-formed
//! IOB2 `I-` after `O` as it is, and seqeval's default mode reads it as seqeval would).

use serde::Serialize;

/// How entity boundaries are written in the tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "UPPERCASE")]
pub enum Scheme {
    /// `I-` everywhere; `B-` only where an entity directly follows one of its type (CoNLL-2003).
    Iob1,
    /// Every entity starts with `B-` (PAN-X, transformers' examples, seqeval's strict default).
    Iob2,
    /// `B-` begin, `I-` inside, `E-` end, `S-` single-token entity.
    Bioes,
    /// BIOES spelt `L-` (last) and `U-` (unit).
    Bilou,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Iob1 => "IOB1",
            Scheme::Iob2 => "IOB2",
            Scheme::Bioes => "BIOES",
            Scheme::Bilou => "BILOU",
        }
    }

    /// The prefixes a tag of this scheme may carry (besides `O`).
    fn prefixes(self) -> &'static [char] {
        match self {
            Scheme::Iob1 | Scheme::Iob2 => &['B', 'I'],
            Scheme::Bioes => &['B', 'I', 'E', 'S'],
            Scheme::Bilou => &['B', 'I', 'L', 'U'],
        }
    }
}

/// `B-PER` → ('B', "PER"), `O` → ('O', ""); None for anything that is not a tag of some
/// scheme (a POS tag, an empty type, an unknown prefix).
pub fn parse_tag(tag: &str) -> Option<(char, &str)> {
    if tag == "O" {
        return Some(('O', ""));
    }
    let (prefix, ty) = tag.split_once('-')?;
    let mut chars = prefix.chars();
    let p = chars.next()?;
    if chars.next().is_some() || ty.is_empty() || !"BIESLU".contains(p) {
        return None;
    }
    Some((p, ty))
}

/// Whether `tag` is `O` or a prefix of `scheme` followed by a type.
pub fn fits(tag: &str, scheme: Scheme) -> bool {
    match parse_tag(tag) {
        Some(('O', _)) => true,
        Some((p, _)) => scheme.prefixes().contains(&p),
        None => false,
    }
}

/// Evidence for a scheme gathered over sentences; `scheme()` decides.
#[derive(Clone, Debug, Default)]
pub struct Detector {
    /// Tags with E-/S- (BIOES) or L-/U- (BILOU).
    bioes: usize,
    bilou: usize,
    /// `I-X` that starts an entity (after `O`, another type or at the start): IOB1's way.
    i_starts: usize,
    /// `B-X` that starts an entity after `O`, another type or at the start: IOB2's way.
    b_starts: usize,
}

impl Detector {
    pub fn add<S: AsRef<str>>(&mut self, tags: &[S]) {
        let mut prev = ('O', "");
        for tag in tags {
            let Some(cur) = parse_tag(tag.as_ref()) else { continue };
            match cur.0 {
                'E' | 'S' => self.bioes += 1,
                'L' | 'U' => self.bilou += 1,
                'I' | 'B' => {
                    let continues = matches!(prev.0, 'B' | 'I') && prev.1 == cur.1;
                    if !continues && cur.0 == 'I' {
                        self.i_starts += 1;
                    }
                    if !continues && cur.0 == 'B' {
                        self.b_starts += 1;
                    }
                }
                _ => {}
            }
            prev = cur;
        }
    }

    /// BILOU or BIOES when their prefixes occur; IOB1 when entities start with `I-` and never
    /// with a `B-` after `O`; IOB2 otherwise (also for a corpus of `O`s only).
    pub fn scheme(&self) -> Scheme {
        if self.bilou > 0 {
            Scheme::Bilou
        } else if self.bioes > 0 {
            Scheme::Bioes
        } else if self.i_starts > 0 && self.b_starts == 0 {
            Scheme::Iob1
        } else {
            Scheme::Iob2
        }
    }
}

/// The scheme of a collection of tag sequences.
pub fn detect<S: AsRef<str>>(sentences: impl IntoIterator<Item = impl AsRef<[S]>>) -> Scheme {
    let mut d = Detector::default();
    for s in sentences {
        d.add(s.as_ref());
    }
    d.scheme()
}

/// One sentence's tags in IOB2. Tags must fit `scheme` (`fits`); IOB2 comes back unchanged.
pub fn to_iob2<S: AsRef<str>>(tags: &[S], scheme: Scheme) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    let mut prev = ('O', String::new());
    for tag in tags {
        let tag = tag.as_ref();
        let Some((p, ty)) = parse_tag(tag) else {
            out.push(tag.to_string());
            continue;
        };
        let converted = match (scheme, p) {
            (_, 'O') => "O".to_string(),
            (Scheme::Iob2, _) => tag.to_string(),
            (Scheme::Iob1, 'I') => {
                let continues = matches!(prev.0, 'B' | 'I') && prev.1 == ty;
                format!("{}-{ty}", if continues { 'I' } else { 'B' })
            }
            (_, 'S' | 'U') => format!("B-{ty}"),
            (_, 'E' | 'L') => format!("I-{ty}"),
            _ => tag.to_string(),
        };
        prev = (p, ty.to_string());
        out.push(converted);
    }
    out
}

/// IOB2 tags written in `scheme` (for a model whose labels are BIOES, or to write a corpus out).
pub fn from_iob2<S: AsRef<str>>(tags: &[S], scheme: Scheme) -> Vec<String> {
    let parsed: Vec<(char, &str)> = tags.iter().map(|t| parse_tag(t.as_ref()).unwrap_or(('O', ""))).collect();
    let continues_at = |i: usize| parsed.get(i).is_some_and(|&(p, ty)| p == 'I' && ty == parsed[i - 1].1);
    parsed
        .iter()
        .enumerate()
        .map(|(i, &(p, ty))| {
            if p == 'O' {
                return "O".to_string();
            }
            let next_continues = continues_at(i + 1);
            let prev_same = i > 0 && matches!(parsed[i - 1].0, 'B' | 'I') && parsed[i - 1].1 == ty;
            let prefix = match scheme {
                Scheme::Iob2 => p,
                Scheme::Iob1 => {
                    if p == 'B' && prev_same {
                        'B'
                    } else {
                        'I'
                    }
                }
                Scheme::Bioes | Scheme::Bilou => {
                    let (end, single) = if scheme == Scheme::Bioes { ('E', 'S') } else { ('L', 'U') };
                    match (p, next_continues) {
                        ('B', true) => 'B',
                        ('B', false) => single,
                        (_, true) => 'I',
                        (_, false) => end,
                    }
                }
            };
            format!("{prefix}-{ty}")
        })
        .collect()
}

/// Where one sentence breaks its scheme's rules: (token index, what is wrong).
pub fn violations<S: AsRef<str>>(tags: &[S], scheme: Scheme) -> Vec<(usize, String)> {
    let parsed: Vec<Option<(char, &str)>> = tags.iter().map(|t| parse_tag(t.as_ref())).collect();
    let mut found = vec![];
    for (i, cur) in parsed.iter().enumerate() {
        let tag = tags[i].as_ref();
        let Some((p, ty)) = *cur else {
            found.push((i, format!("{tag:?} is not a tag")));
            continue;
        };
        if p == 'O' {
            continue;
        }
        if !scheme.prefixes().contains(&p) {
            found.push((i, format!("{tag} is not a {} tag", scheme.name())));
            continue;
        }
        let prev = if i > 0 { parsed[i - 1].unwrap_or(('O', "")) } else { ('O', "") };
        let next = parsed.get(i + 1).copied().flatten().unwrap_or(('O', ""));
        let same_before = prev.1 == ty;
        let problem = match scheme {
            Scheme::Iob2 => (p == 'I' && !(matches!(prev.0, 'B' | 'I') && same_before))
                .then(|| format!("{tag} does not continue a {ty} entity (after {})", tag_name(prev))),
            Scheme::Iob1 => (p == 'B' && !(matches!(prev.0, 'B' | 'I') && same_before))
                .then(|| format!("{tag} does not follow a {ty} entity (IOB1 uses B- only there)")),
            Scheme::Bioes | Scheme::Bilou => {
                let (end, single) = if scheme == Scheme::Bioes { ('E', 'S') } else { ('L', 'U') };
                let opens = p == 'B' || p == 'I';
                let continues = p == 'I' || p == end;
                if continues && !(matches!(prev.0, 'B' | 'I') && same_before) {
                    Some(format!("{tag} does not continue a {ty} entity (after {})", tag_name(prev)))
                } else if opens && !((next.0 == 'I' || next.0 == end) && next.1 == ty) {
                    Some(format!("{tag} is not followed by I-{ty} or {end}-{ty} (a single token is {single}-{ty})"))
                } else {
                    None
                }
            }
        };
        if let Some(problem) = problem {
            found.push((i, problem));
        }
    }
    found
}

fn tag_name((p, ty): (char, &str)) -> String {
    if p == 'O' {
        "O or the start".to_string()
    } else {
        format!("{p}-{ty}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(tags: &str) -> Vec<String> {
        tags.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn iob1_converts_to_iob2() {
        let iob1 = v("I-PER I-PER O I-LOC B-LOC I-ORG");
        assert_eq!(detect([&iob1]), Scheme::Iob1);
        assert_eq!(to_iob2(&iob1, Scheme::Iob1), v("B-PER I-PER O B-LOC B-LOC B-ORG"));
        assert_eq!(from_iob2(&to_iob2(&iob1, Scheme::Iob1), Scheme::Iob1), iob1);
    }

    #[test]
    fn bioes_and_bilou_convert_both_ways() {
        let bioes = v("B-PER E-PER O S-LOC B-ORG I-ORG E-ORG");
        assert_eq!(detect([&bioes]), Scheme::Bioes);
        let iob2 = to_iob2(&bioes, Scheme::Bioes);
        assert_eq!(iob2, v("B-PER I-PER O B-LOC B-ORG I-ORG I-ORG"));
        assert_eq!(from_iob2(&iob2, Scheme::Bioes), bioes);
        let bilou = v("U-PER B-LOC L-LOC");
        assert_eq!(detect([&bilou]), Scheme::Bilou);
        assert_eq!(to_iob2(&bilou, Scheme::Bilou), v("B-PER B-LOC I-LOC"));
    }

    #[test]
    fn iob2_is_kept_as_it_is_with_its_violations_reported() {
        let tags = v("O I-PER B-LOC I-ORG");
        assert_eq!(detect([&tags]), Scheme::Iob2);
        assert_eq!(to_iob2(&tags, Scheme::Iob2), tags);
        let found = violations(&tags, Scheme::Iob2);
        assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!(found[0].1.contains("I-PER does not continue"), "{:?}", found);
    }

    #[test]
    fn bioes_violations() {
        let found = violations(&v("B-PER O E-LOC S-ORG I-ORG"), Scheme::Bioes);
        assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), vec![0, 2, 4]);
        assert!(violations(&v("E-PER"), Scheme::Iob2)[0].1.contains("not a IOB2 tag"));
    }

    #[test]
    fn tags_are_parsed_strictly() {
        assert_eq!(parse_tag("B-MISC"), Some(('B', "MISC")));
        assert_eq!(parse_tag("I-per-son"), Some(('I', "per-son")));
        for bad in ["NNP", "B-", "BB-PER", "X-PER", "", "o"] {
            assert_eq!(parse_tag(bad), None, "{bad}");
        }
    }
}
