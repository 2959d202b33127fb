//! A problem found in an input file: what is wrong and where, so `qaloop check` can list every
//! problem at once instead of stopping at the first.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file it was found in.
    pub file: PathBuf,
    /// Where in the file: a key (`activity[3].due`), a line (`line 12`) or a row and column
    /// (`row 7, column email`); empty when the whole file is at fault.
    pub location: String,
    /// What is wrong, and where possible what to do about it.
    pub message: String,
}

impl Problem {
    /// A problem at `location` in `file`.
    pub fn new(file: &Path, location: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            location: location.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.location,
                self.message
            )
        }
    }
}

/// Every problem found in a set of inputs; an error type in its own right so callers can `?` it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds one problem.
    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    /// `Ok(value)` when nothing is wrong, else every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl From<Problem> for Problems {
    fn from(problem: Problem) -> Self {
        Self(vec![problem])
    }
}

/// The 1-based line of byte `offset` in `text`, for parsers that report spans.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
