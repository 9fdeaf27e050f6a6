//! The risk classifier of `risk.md`: a fixed table over a decision's inputs, pure and
//! deterministic, so that the daemon, the CLI and any third-party verifier give the same level
//! and reasons for the same inputs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::confidence::Confidence;

/// The prompt types a decision can be about.
pub const PROMPT_TYPES: [&str; 4] = ["yes_no", "confirm_enter", "multiple_choice", "free_text"];

/// The actions a policy can choose.
pub const ACTIONS: [&str; 4] = ["auto_reply", "require_human", "deny", "notify_only"];

/// The values `ci_status` may take.
pub const CI_STATUSES: [&str; 4] = ["passing", "failing", "unknown", ""];

/// How risky a decision is, ordered `None < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    /// Nothing is answered.
    None,
    /// No risk factor fired.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
    /// `critical`.
    Critical,
}

impl RiskLevel {
    /// Every level, in order.
    pub const ALL: [RiskLevel; 5] = [
        RiskLevel::None,
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A risk level name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown risk level '{value}': expected one of none, low, medium, high, critical")]
pub struct UnknownRiskLevel {
    /// What was given.
    pub value: String,
}

impl FromStr for RiskLevel {
    type Err = UnknownRiskLevel;

    /// Case-insensitive; surrounding white space is ignored. Unlike confidence, an unknown name
    /// is an error: a threshold that silently became some other level would weaken or tighten
    /// every decision without anyone noticing.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownRiskLevel {
                value: s.to_owned(),
            })
    }
}

/// What the classifier reads. Borrowed: the prompt text in particular is read, never stored.
#[derive(Debug, Clone, Copy)]
pub struct RiskInput<'a> {
    /// The policy's action: `auto_reply`, `require_human`, `deny`, `notify_only`.
    pub action: &'a str,
    /// `yes_no`, `confirm_enter`, `multiple_choice` or `free_text`.
    pub prompt_type: &'a str,
    /// Already normalised (an unknown value is `Low`).
    pub confidence: Confidence,
    /// The prompt text.
    pub prompt_text: &'a str,
    /// The branch (`""` when unknown).
    pub branch: &'a str,
    /// `passing`, `failing`, `unknown` or `""`.
    pub ci_status: &'a str,
    /// The session's tags.
    pub session_tags: &'a [String],
}

/// The classifier's verdict, serialised as `{"risk_level", "risk_reasons"}` like the trace
/// entry's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskAssessment {
    /// The level.
    #[serde(rename = "risk_level")]
    pub level: RiskLevel,
    /// Why: every table row that fired at the level, then the session tags that changed it.
    /// Never empty.
    #[serde(rename = "risk_reasons")]
    pub reasons: Vec<String>,
}

/// The session tag that raises the level to at least `high`.
pub const CRITICAL_SESSION: &str = "critical_session";
/// The session tag that lowers the level to at most `medium`.
pub const SAFE_SESSION: &str = "safe_session";

/// Lower-cased substrings that make a prompt destructive. Byte for byte the contract's list,
/// trailing spaces included (`rm -r `, `truncate `): every implementation must agree on every
/// prompt, so none of them may "improve" a pattern.
const DESTRUCTIVE: [&str; 17] = [
    "rm -rf",
    "rm -r ",
    "drop table",
    "drop database",
    "truncate ",
    "delete from",
    "force-push",
    "push --force",
    "push -f",
    "reset --hard",
    "clean -f",
    "mkfs",
    "dd if=",
    "shutdown",
    "reboot",
    "kill -9",
    "format c:",
];

const PROTECTED_BRANCHES: [&str; 5] = ["main", "master", "release", "production", "prod"];

/// Whether `branch`, trimmed and lower-cased, is `main`, `master`, `release`, `production`,
/// `prod`, or starts with `release/`. Empty is not protected.
pub fn is_protected_branch(branch: &str) -> bool {
    let branch = branch.trim().to_lowercase();
    PROTECTED_BRANCHES.contains(&branch.as_str()) || branch.starts_with("release/")
}

/// Whether `text`, lower-cased, contains one of the destructive commands of the contract.
pub fn is_destructive(text: &str) -> bool {
    // Full Unicode lower-casing, not ASCII only: look-alikes such as the Kelvin sign fold to
    // ASCII letters, and a prompt written with them should not slip past the list.
    let text = text.to_lowercase();
    DESTRUCTIVE.iter().any(|pattern| text.contains(pattern))
}

/// Classifies one decision by the table of `risk.md`, then applies the session tags.
pub fn classify(input: &RiskInput<'_>) -> RiskAssessment {
    let auto_reply = input.action == "auto_reply";
    let protected = auto_reply && is_protected_branch(input.branch);
    // In table order: the reasons keep this order.
    let rows = [
        (
            auto_reply && is_destructive(input.prompt_text),
            RiskLevel::Critical,
            "auto_reply on a destructive command",
        ),
        (
            protected && input.ci_status == "failing",
            RiskLevel::Critical,
            "auto_reply on protected branch with failing CI",
        ),
        (
            auto_reply && input.prompt_type == "free_text",
            RiskLevel::High,
            "auto_reply on free_text prompt",
        ),
        (
            auto_reply && input.confidence == Confidence::Low,
            RiskLevel::High,
            "auto_reply with low confidence",
        ),
        (
            protected,
            RiskLevel::Medium,
            "auto_reply on protected branch",
        ),
        (
            auto_reply && input.confidence == Confidence::Medium,
            RiskLevel::Medium,
            "auto_reply with medium confidence",
        ),
        (
            input.action == "notify_only",
            RiskLevel::None,
            "notify_only: nothing is answered",
        ),
    ];
    let fired = rows.iter().filter(|(fires, _, _)| *fires);
    let mut assessment = match fired.clone().map(|(_, level, _)| *level).max() {
        Some(level) => RiskAssessment {
            level,
            reasons: fired
                .filter(|(_, row_level, _)| *row_level == level)
                .map(|(_, _, reason)| (*reason).to_owned())
                .collect(),
        },
        None => RiskAssessment {
            level: RiskLevel::Low,
            reasons: vec!["no risk factors detected".to_owned()],
        },
    };
    apply_session_tags(&mut assessment, input.session_tags);
    assessment
}

/// `critical_session` wins over `safe_session`: a session someone marked critical must never be
/// relaxed by a second tag, so with both only the raise applies.
fn apply_session_tags(assessment: &mut RiskAssessment, tags: &[String]) {
    let has = |tag: &str| tags.iter().any(|t| t == tag);
    let (tag, changed_level) = if has(CRITICAL_SESSION) {
        (CRITICAL_SESSION, assessment.level.max(RiskLevel::High))
    } else if has(SAFE_SESSION) {
        (SAFE_SESSION, assessment.level.min(RiskLevel::Medium))
    } else {
        return;
    };
    if changed_level != assessment.level {
        assessment.level = changed_level;
        assessment.reasons.push(format!("session tag {tag}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A low-risk auto_reply to change one input of at a time.
    fn base() -> RiskInput<'static> {
        RiskInput {
            action: "auto_reply",
            prompt_type: "yes_no",
            confidence: Confidence::High,
            prompt_text: "Continue? [y/n]",
            branch: "feature/foo",
            ci_status: "passing",
            session_tags: &[],
        }
    }

    fn assess(input: RiskInput<'_>) -> (RiskLevel, Vec<String>) {
        let a = classify(&input);
        (a.level, a.reasons)
    }

    fn reasons(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn levels_are_ordered_and_named() {
        assert!(RiskLevel::ALL.windows(2).all(|w| w[0] < w[1]));
        for level in RiskLevel::ALL {
            assert_eq!(level.to_string(), level.name());
            assert_eq!(
                serde_json::to_value(level).ok(),
                Some(serde_json::Value::from(level.name()))
            );
            assert_eq!(level.name().parse::<RiskLevel>(), Ok(level));
        }
        assert_eq!(" HIGH ".parse::<RiskLevel>(), Ok(RiskLevel::High));
        let error = "severe".parse::<RiskLevel>().err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("unknown risk level 'severe': expected one of none, low, medium, high, critical")
        );
    }

    #[test]
    fn row_1_destructive_auto_reply_is_critical() {
        let input = RiskInput {
            prompt_text: "Run RM -RF build/? [y/n]",
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::Critical,
                reasons(&["auto_reply on a destructive command"])
            )
        );
    }

    #[test]
    fn row_2_protected_branch_with_failing_ci_is_critical() {
        let input = RiskInput {
            branch: "main",
            ci_status: "failing",
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::Critical,
                reasons(&["auto_reply on protected branch with failing CI"])
            )
        );
        // Failing CI on an unprotected branch is not a factor at all.
        let input = RiskInput {
            ci_status: "failing",
            ..base()
        };
        assert_eq!(assess(input).0, RiskLevel::Low);
    }

    #[test]
    fn rows_1_and_2_together_list_both_in_table_order() {
        let input = RiskInput {
            prompt_text: "git push --force origin main",
            branch: "release/1.0",
            ci_status: "failing",
            prompt_type: "free_text",
            confidence: Confidence::Low,
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::Critical,
                reasons(&[
                    "auto_reply on a destructive command",
                    "auto_reply on protected branch with failing CI"
                ])
            )
        );
    }

    #[test]
    fn row_3_free_text_is_high() {
        let input = RiskInput {
            prompt_type: "free_text",
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::High,
                reasons(&["auto_reply on free_text prompt"])
            )
        );
    }

    #[test]
    fn row_4_low_confidence_is_high_and_joins_row_3() {
        let input = RiskInput {
            confidence: Confidence::Low,
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::High,
                reasons(&["auto_reply with low confidence"])
            )
        );
        let input = RiskInput {
            confidence: Confidence::normalise("bogus"),
            prompt_type: "free_text",
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::High,
                reasons(&[
                    "auto_reply on free_text prompt",
                    "auto_reply with low confidence"
                ])
            )
        );
    }

    #[test]
    fn row_5_protected_branch_is_medium() {
        let input = RiskInput {
            branch: "main",
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::Medium,
                reasons(&["auto_reply on protected branch"])
            )
        );
    }

    #[test]
    fn row_6_medium_confidence_is_medium_and_joins_row_5() {
        let input = RiskInput {
            confidence: Confidence::Medium,
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::Medium,
                reasons(&["auto_reply with medium confidence"])
            )
        );
        let input = RiskInput {
            confidence: Confidence::Medium,
            branch: "prod",
            ..base()
        };
        assert_eq!(
            assess(input).1,
            reasons(&[
                "auto_reply on protected branch",
                "auto_reply with medium confidence"
            ])
        );
    }

    #[test]
    fn lower_rows_are_not_listed_under_a_higher_level() {
        let input = RiskInput {
            prompt_text: "reboot now?",
            branch: "main",
            confidence: Confidence::Medium,
            prompt_type: "free_text",
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::Critical,
                reasons(&["auto_reply on a destructive command"])
            )
        );
    }

    #[test]
    fn row_7_notify_only_is_none_whatever_the_rest() {
        let input = RiskInput {
            action: "notify_only",
            prompt_text: "rm -rf /",
            branch: "main",
            ci_status: "failing",
            prompt_type: "free_text",
            confidence: Confidence::Low,
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::None,
                reasons(&["notify_only: nothing is answered"])
            )
        );
    }

    #[test]
    fn row_8_other_actions_are_low_whatever_the_rest() {
        for action in ["require_human", "deny", "something_else", "AUTO_REPLY", ""] {
            let input = RiskInput {
                action,
                prompt_text: "rm -rf /",
                branch: "main",
                ci_status: "failing",
                prompt_type: "free_text",
                confidence: Confidence::Low,
                ..base()
            };
            assert_eq!(
                assess(input),
                (RiskLevel::Low, reasons(&["no risk factors detected"])),
                "{action:?}"
            );
        }
        assert_eq!(
            assess(base()),
            (RiskLevel::Low, reasons(&["no risk factors detected"]))
        );
    }

    #[test]
    fn critical_session_raises_to_high_and_says_so() {
        let tags = [CRITICAL_SESSION.to_owned()];
        for (action, before) in [
            ("notify_only", "notify_only: nothing is answered"),
            ("deny", "no risk factors detected"),
        ] {
            let input = RiskInput {
                action,
                session_tags: &tags,
                ..base()
            };
            assert_eq!(
                assess(input),
                (
                    RiskLevel::High,
                    reasons(&[before, "session tag critical_session"])
                )
            );
        }
        // Already high or above: unchanged, and no tag reason.
        let input = RiskInput {
            prompt_type: "free_text",
            session_tags: &tags,
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::High,
                reasons(&["auto_reply on free_text prompt"])
            )
        );
    }

    #[test]
    fn safe_session_lowers_to_medium_and_says_so() {
        let tags = [SAFE_SESSION.to_owned()];
        let input = RiskInput {
            prompt_text: "DROP TABLE users;",
            session_tags: &tags,
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::Medium,
                reasons(&[
                    "auto_reply on a destructive command",
                    "session tag safe_session"
                ])
            )
        );
        // At or below medium: unchanged, and no tag reason.
        let input = RiskInput {
            session_tags: &tags,
            ..base()
        };
        assert_eq!(
            assess(input),
            (RiskLevel::Low, reasons(&["no risk factors detected"]))
        );
    }

    #[test]
    fn with_both_tags_critical_session_wins() {
        let tags = [SAFE_SESSION.to_owned(), CRITICAL_SESSION.to_owned()];
        let input = RiskInput {
            prompt_text: "shutdown -h now",
            session_tags: &tags,
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::Critical,
                reasons(&["auto_reply on a destructive command"])
            )
        );
        let input = RiskInput {
            confidence: Confidence::Medium,
            session_tags: &tags,
            ..base()
        };
        assert_eq!(
            assess(input),
            (
                RiskLevel::High,
                reasons(&[
                    "auto_reply with medium confidence",
                    "session tag critical_session"
                ])
            )
        );
    }

    #[test]
    fn tags_match_exactly() {
        let tags = ["Critical_Session".to_owned(), " safe_session".to_owned()];
        let input = RiskInput {
            action: "deny",
            session_tags: &tags,
            ..base()
        };
        assert_eq!(assess(input).0, RiskLevel::Low);
    }

    #[test]
    fn protected_branches() {
        for branch in [
            "main",
            "master",
            "release",
            "production",
            "prod",
            "Release/2.0",
            "release/x",
            "release/",
            "  MAIN\n",
            "\tProd ",
        ] {
            assert!(is_protected_branch(branch), "{branch:?}");
        }
        for branch in [
            "",
            "   ",
            "feature/foo",
            "mainline",
            "my-main",
            "releases/1.0",
            "release-1.0",
            "pre-release/1.0",
            "products",
            "origin/main",
        ] {
            assert!(!is_protected_branch(branch), "{branch:?}");
        }
    }

    #[test]
    fn destructive_texts() {
        for text in [
            "rm -rf build/",
            "RM -RF /",
            "rm -r dir",
            "DROP TABLE users",
            "drop database prod",
            "truncate logs",
            "DELETE FROM users",
            "git force-push",
            "git push --force origin main",
            "git push -f",
            "git reset --hard HEAD~1",
            "git clean -fdx",
            "mkfs.ext4 /dev/sda1",
            "dd if=/dev/zero of=/dev/sda",
            "sudo shutdown now",
            "Reboot?",
            "kill -9 1234",
            "FORMAT C:",
            // The Kelvin sign lower-cases to an ASCII `k`.
            "\u{212A}ill -9 1",
        ] {
            assert!(is_destructive(text), "{text:?}");
        }
        for text in [
            "",
            "Continue? [y/n]",
            "rm -r",
            "rm file.txt",
            "truncate",
            "git push origin main",
            "git reset --soft",
            "kill 1234",
            "drop  table",
        ] {
            assert!(!is_destructive(text), "{text:?}");
        }
    }

    #[test]
    fn assessments_serialise_with_the_trace_field_names() {
        let assessment = classify(&base());
        assert_eq!(
            serde_json::to_value(&assessment).ok(),
            Some(serde_json::json!({
                "risk_level": "low",
                "risk_reasons": ["no risk factors detected"],
            }))
        );
    }
}
