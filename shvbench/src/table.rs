//! Values collected per (row, column) over rounds, read back as medians: the data
//! behind the Markdown reports of `transports` and `ssh`.

use crate::stats::median;

/// One row's columns, each with its values, in the order first recorded.
type Cells = Vec<(String, Vec<f64>)>;

#[derive(Debug, Default)]
pub struct Table {
    /// Rows in the order first recorded.
    rows: Vec<(String, Cells)>,
}

impl Table {
    pub fn record(&mut self, row: &str, column: &str, v: f64) {
        let i = match self.rows.iter().position(|(r, _)| r == row) {
            Some(i) => i,
            None => {
                self.rows.push((row.to_string(), Vec::new()));
                self.rows.len() - 1
            }
        };
        let cells = &mut self.rows[i].1;
        match cells.iter_mut().find(|(c, _)| c == column) {
            Some((_, vs)) => vs.push(v),
            None => cells.push((column.to_string(), vec![v])),
        }
    }

    /// The median of what was recorded at (row, column), if anything was.
    pub fn median(&self, row: &str, column: &str) -> Option<f64> {
        let (_, cells) = self.rows.iter().find(|(r, _)| r == row)?;
        let (_, vs) = cells.iter().find(|(c, _)| c == column)?;
        Some(median(vs))
    }

    pub fn rows(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|(r, _)| r.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_per_cell_in_first_seen_order() {
        let mut t = Table::default();
        t.record("b", "x", 3.0);
        t.record("a", "x", 1.0);
        t.record("b", "x", 1.0);
        t.record("b", "x", 2.0);
        assert_eq!(t.rows().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(t.median("b", "x"), Some(2.0));
        assert_eq!(t.median("b", "y"), None);
        assert_eq!(t.median("c", "x"), None);
    }
}
