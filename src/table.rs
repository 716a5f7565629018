//! Plain-text tables for the terminal: column tables (one row per record, as pandas prints a
//! DataFrame) and row tables (one row per field, columns wrapped to the terminal width, as the
//! book shows a tokenized sentence).

/// A table with a header row; columns are right-aligned except the first.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let ncol = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.enumerate().take(ncol) {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == 0 {
                line += cell;
                line += &" ".repeat(pad);
            } else {
                line += "  ";
                line += &" ".repeat(pad);
                line += cell;
            }
        }
        line.trim_end().to_string() + "\n"
    };
    let mut out = fmt_row(&mut header.iter().copied());
    for row in rows {
        out += &fmt_row(&mut row.iter().map(String::as_str));
    }
    out
}

/// Named rows of equal length laid out side by side, wrapped into blocks of at most `width`
/// characters, each block headed by the column indices.
pub fn rows(named: &[(&str, Vec<String>)], width: usize) -> String {
    let n = named.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let label_w = named.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0);
    let col_w: Vec<usize> = (0..n)
        .map(|j| {
            let idx = j.to_string().len();
            named.iter().filter_map(|(_, v)| v.get(j)).map(|c| c.chars().count()).fold(idx, usize::max)
        })
        .collect();
    let mut out = String::new();
    let mut start = 0;
    while start < n {
        let mut end = start;
        let mut used = label_w;
        while end < n && (end == start || used + 2 + col_w[end] <= width) {
            used += 2 + col_w[end];
            end += 1;
        }
        let cell = |s: &str, w: usize| format!("  {}{}", s, " ".repeat(w - s.chars().count()));
        let mut line = " ".repeat(label_w);
        for (j, &w) in col_w.iter().enumerate().take(end).skip(start) {
            line += &cell(&j.to_string(), w);
        }
        out += line.trim_end();
        out += "\n";
        for (name, values) in named {
            let mut line = format!("{name}{}", " ".repeat(label_w - name.chars().count()));
            for (j, &w) in col_w.iter().enumerate().take(end).skip(start) {
                line += &cell(values.get(j).map(String::as_str).unwrap_or(""), w);
            }
            out += line.trim_end();
            out += "\n";
        }
        start = end;
        if start < n {
            out += "\n";
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_wrap_at_width() {
        let named = [("Tokens", vec!["aaaa".to_string(); 6]), ("Tags", vec!["O".to_string(); 6])];
        let text = rows(&named, 20);
        // 6 (label) + 2 columns of 6 = 18 <= 20; a third would be 24.
        assert_eq!(text.matches("Tokens").count(), 3);
        assert!(text.lines().all(|l| l.chars().count() <= 20));
    }

    #[test]
    fn columns_align() {
        let t = columns(&["lang", "rows"], &[vec!["de".into(), "12580".into()], vec!["fr".into(), "4580".into()]]);
        assert_eq!(t, "lang   rows\nde    12580\nfr     4580\n");
    }
}
