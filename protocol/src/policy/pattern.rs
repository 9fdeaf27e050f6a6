//! `contains_is_regex` patterns: which ones a policy may use, and the one way they are compiled.
//!
//! The `regex` crate runs in linear time, so a pattern needs no timeout; the price is that
//! backreferences and look-around cannot run at all. Each rejection gets its own reason, because
//! "does not compile" would not tell a user whose pattern worked in the original runtime what to
//! change.

use regex::{Regex, RegexBuilder};
use regex_syntax::ast::ErrorKind as AstErrorKind;

/// Longest pattern accepted, in characters.
pub const MAX_PATTERN_CHARS: usize = 200;

/// Why a pattern is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Over [`MAX_PATTERN_CHARS`].
    #[error("regex is longer than {MAX_PATTERN_CHARS} characters ({0} characters)")]
    TooLong(usize),
    /// `\1`, `(?P=name)`, `\k<name>`.
    #[error(
        "regex uses a backreference, which the linear-time regex engine cannot run; \
         match the repeated text explicitly"
    )]
    Backreference,
    /// `(?=…)`, `(?!…)`, `(?<=…)`, `(?<!…)`.
    #[error(
        "regex uses look-around (a lookahead or lookbehind), which the linear-time regex engine \
         cannot run; use a none_of block (policy_version \"1\") to exclude text instead"
    )]
    LookAround,
    /// It would match every prompt.
    #[error(
        "regex can match the empty string, so it would match every prompt; make it more specific"
    )]
    MatchesEmpty,
    /// Anything else the parser or compiler refuses.
    #[error("regex does not compile: {0}")]
    Invalid(String),
}

/// Checks `pattern` as [`compile`] would, without keeping the compiled form.
pub fn check(pattern: &str) -> Result<(), PatternError> {
    compile(pattern).map(drop)
}

/// Compiles a `contains` pattern the way the policy language defines the search: unanchored,
/// case-insensitive, `.` matching newline. Evaluation must use this so that what loads is what
/// runs.
pub fn compile(pattern: &str) -> Result<Regex, PatternError> {
    let chars = pattern.chars().count();
    if chars > MAX_PATTERN_CHARS {
        return Err(PatternError::TooLong(chars));
    }
    if uses_named_backreference(pattern) {
        return Err(PatternError::Backreference);
    }
    let hir = regex_syntax::ParserBuilder::new()
        .case_insensitive(true)
        .dot_matches_new_line(true)
        .build()
        .parse(pattern)
        .map_err(classify)?;
    // `None` means the pattern can never match: useless, but harmless, so it is let through.
    if hir.properties().minimum_len() == Some(0) {
        return Err(PatternError::MatchesEmpty);
    }
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .dot_matches_new_line(true)
        .build()
        .map_err(|e| PatternError::Invalid(first_line(&e.to_string())))
}

fn classify(e: regex_syntax::Error) -> PatternError {
    match e {
        regex_syntax::Error::Parse(e) => match e.kind() {
            AstErrorKind::UnsupportedBackreference => PatternError::Backreference,
            AstErrorKind::UnsupportedLookAround => PatternError::LookAround,
            kind => PatternError::Invalid(kind.to_string()),
        },
        regex_syntax::Error::Translate(e) => PatternError::Invalid(e.kind().to_string()),
        other => PatternError::Invalid(first_line(&other.to_string())),
    }
}

/// Python's named backreferences, which regex-syntax reports only as an unknown group or escape.
fn uses_named_backreference(pattern: &str) -> bool {
    ["(?P=", "\\k<", "\\k'", "\\k{"]
        .iter()
        .any(|form| pattern.contains(form))
}

// The regex crate's messages draw the pattern with a caret over several lines; one line reads
// better inside `file:line:col: path: message`.
fn first_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_owned())
        .unwrap_or_else(|| message.lines().next().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_language_s_examples() {
        for p in [
            r"(rm\s+-rf|drop\s+table|truncate|git\s+push\s+(-f|--force))",
            "api.?key|password|token",
            r"Run \d+ tests?",
            "(?i)deploy",
            r"\w+\s\d",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn each_rejection_has_its_own_reason() {
        assert_eq!(check(r"(\w+) \1"), Err(PatternError::Backreference));
        assert_eq!(check(r"(?P<w>a)(?P=w)"), Err(PatternError::Backreference));
        assert_eq!(
            check(r"delete(?!\s+nothing)"),
            Err(PatternError::LookAround)
        );
        assert_eq!(check(r"(?<=a)b"), Err(PatternError::LookAround));
        assert_eq!(check("x?"), Err(PatternError::MatchesEmpty));
        assert_eq!(check("a|"), Err(PatternError::MatchesEmpty));
        assert_eq!(check(r"\b"), Err(PatternError::MatchesEmpty));
        assert_eq!(check(&"a".repeat(201)), Err(PatternError::TooLong(201)));
        assert_eq!(check(&"a".repeat(200)), Ok(()));
        assert!(matches!(check("(unclosed"), Err(PatternError::Invalid(m)) if !m.contains('\n')));
        assert!(PatternError::LookAround.to_string().contains("look-around"));
        assert!(PatternError::TooLong(201).to_string().contains("200"));
        assert!(
            PatternError::MatchesEmpty
                .to_string()
                .contains("empty string")
        );
    }

    #[test]
    fn search_is_unanchored_case_insensitive_and_dot_all() {
        let re = compile("create.pull").unwrap();
        assert!(re.is_match("Would you like to CREATE\nPULL request?"));
    }
}
