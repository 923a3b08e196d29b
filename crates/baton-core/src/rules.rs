//! Stall rules: how long each expected signal may take.
//!
//! Built-in defaults, then per workflow, per stage, and per stage of one
//! workflow from a TOML file; an event that states its own window (a claim's
//! lease, an offer's `accept_within`, the windows of `TaskCreated`) beats all
//! of them. A window may be `"off"` to disable that expectation.
//!
//! ```toml
//! [defaults]
//! heartbeat = "30s"     # owner's lease
//! accept = "5m"         # handoff acceptance
//! start = "10m"         # claim after creation / release
//! progress = "off"      # output must advance
//! blocked = "1h"        # input required
//! deadline = "off"      # task must end
//! renotify = "15m"      # re-page while firing
//!
//! [workflows.blog]
//! heartbeat = "1m"
//!
//! [stages.review]
//! accept = "2m"
//!
//! [workflows.blog.stages.review]
//! accept = "1m"
//!
//! # Artifact leases: an exclusive lease on this name (or one under it)
//! # held longer than max_hold while another agent waits for it is
//! # reported (LEASE_HELD_TOO_LONG). The most specific rule wins: the
//! # longest name, then one naming the workflow over one that does not.
//! [[leases]]
//! artifact = "drafts/"
//! workflow = "blog"     # optional: only this workflow's scope
//! max_hold = "10m"
//! ```

use std::{collections::HashMap, time::Duration};

use serde::Deserialize;

use crate::{
    ids::{StageName, WorkflowId},
    lease::{Artifact, ArtifactName},
};

/// Resolved windows for one (workflow, stage); `None` = expectation off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub heartbeat: Option<Duration>,
    pub accept: Option<Duration>,
    pub start: Option<Duration>,
    pub deadline: Option<Duration>,
    pub progress: Option<Duration>,
    pub blocked: Option<Duration>,
    pub renotify: Option<Duration>,
}

impl Default for Windows {
    /// The built-in defaults.
    fn default() -> Self {
        Windows {
            heartbeat: Some(Duration::from_secs(30)),
            accept: Some(Duration::from_secs(5 * 60)),
            start: Some(Duration::from_secs(10 * 60)),
            deadline: None,
            progress: None,
            blocked: Some(Duration::from_secs(60 * 60)),
            renotify: Some(Duration::from_secs(15 * 60)),
        }
    }
}

/// One level of overrides: unset fields inherit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides {
    pub heartbeat: Option<Setting>,
    pub accept: Option<Setting>,
    pub start: Option<Setting>,
    pub deadline: Option<Setting>,
    pub progress: Option<Setting>,
    pub blocked: Option<Setting>,
    pub renotify: Option<Setting>,
}

/// A window, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Off,
    After(Duration),
}

impl Overrides {
    fn apply_to(&self, w: &mut Windows) {
        let set = |target: &mut Option<Duration>, s: Option<Setting>| match s {
            Some(Setting::Off) => *target = None,
            Some(Setting::After(d)) => *target = Some(d),
            None => {}
        };
        set(&mut w.heartbeat, self.heartbeat);
        set(&mut w.accept, self.accept);
        set(&mut w.start, self.start);
        set(&mut w.deadline, self.deadline);
        set(&mut w.progress, self.progress);
        set(&mut w.blocked, self.blocked);
        set(&mut w.renotify, self.renotify);
    }
}

/// The whole rule set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rules {
    pub defaults: Windows,
    pub workflows: HashMap<WorkflowId, Overrides>,
    pub stages: HashMap<StageName, Overrides>,
    pub workflow_stages: HashMap<(WorkflowId, StageName), Overrides>,
    /// Limits on exclusive leases, in file order.
    pub leases: Vec<LeaseRule>,
}

/// How long an exclusive lease may be held while others wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRule {
    /// The name the rule covers, with everything under it.
    pub artifact: ArtifactName,
    /// Only this workflow's scope; `None` = every scope, the global one too.
    pub workflow: Option<WorkflowId>,
    pub max_hold: Duration,
}

impl Rules {
    /// The windows that apply to a task of `workflow` in `stage`.
    pub fn resolve(&self, workflow: &WorkflowId, stage: Option<&StageName>) -> Windows {
        let mut w = self.defaults;
        if let Some(o) = self.workflows.get(workflow) {
            o.apply_to(&mut w);
        }
        if let Some(stage) = stage {
            if let Some(o) = self.stages.get(stage) {
                o.apply_to(&mut w);
            }
            // Avoid building the tuple key when no workflow-stage rules exist.
            if !self.workflow_stages.is_empty()
                && let Some(o) = self.workflow_stages.get(&(workflow.clone(), stage.clone()))
            {
                o.apply_to(&mut w);
            }
        }
        w
    }

    /// The `max_hold` of the most specific lease rule covering `artifact`
    /// (the longest name; at equal length, one naming the workflow), or
    /// `None` when no rule covers it.
    pub fn max_hold(&self, artifact: &Artifact) -> Option<Duration> {
        self.leases
            .iter()
            .filter(|r| {
                r.artifact.covers(&artifact.name)
                    && r.workflow
                        .as_ref()
                        .is_none_or(|w| artifact.scope.workflow() == Some(w))
            })
            .max_by_key(|r| (r.artifact.as_str().len(), r.workflow.is_some()))
            .map(|r| r.max_hold)
    }

    /// Parses a rules file. Errors name the line and the field.
    pub fn from_toml(text: &str) -> Result<Rules, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |span| line_col(text, span.start));
            RulesError {
                line,
                column,
                field: String::new(),
                message: e.message().to_string(),
            }
        })?;
        let mut rules = Rules::default();
        if let Some(d) = &file.defaults {
            d.to_overrides(text, "defaults")?
                .apply_to(&mut rules.defaults);
        }
        for (name, level) in &file.workflows {
            let path = format!("workflows.{}", name.get_ref());
            let id = WorkflowId::new(name.get_ref())
                .map_err(|e| RulesError::at(text, name.span(), &path, e.to_string()))?;
            rules
                .workflows
                .insert(id.clone(), level.windows(text, &path)?);
            for (stage, o) in level.stages.iter().flat_map(|s| s.get_ref()) {
                let path = format!("{path}.stages.{}", stage.get_ref());
                let stage = StageName::new(stage.get_ref())
                    .map_err(|e| RulesError::at(text, stage.span(), &path, e.to_string()))?;
                rules
                    .workflow_stages
                    .insert((id.clone(), stage), o.to_overrides(text, &path)?);
            }
        }
        for (name, o) in &file.stages {
            let path = format!("stages.{}", name.get_ref());
            let stage = StageName::new(name.get_ref())
                .map_err(|e| RulesError::at(text, name.span(), &path, e.to_string()))?;
            rules.stages.insert(stage, o.to_overrides(text, &path)?);
        }
        for (i, rule) in file.leases.iter().enumerate() {
            let path = format!("leases[{i}]");
            let artifact = ArtifactName::new(rule.artifact.get_ref()).map_err(|e| {
                RulesError::at(
                    text,
                    rule.artifact.span(),
                    &format!("{path}.artifact"),
                    e.to_string(),
                )
            })?;
            let workflow = rule
                .workflow
                .as_ref()
                .map(|w| {
                    WorkflowId::new(w.get_ref()).map_err(|e| {
                        RulesError::at(text, w.span(), &format!("{path}.workflow"), e.to_string())
                    })
                })
                .transpose()?;
            let max_hold = match parse_setting(rule.max_hold.get_ref()) {
                Ok(Setting::After(d)) => d,
                Ok(Setting::Off) => {
                    return Err(RulesError::at(
                        text,
                        rule.max_hold.span(),
                        &format!("{path}.max_hold"),
                        "a lease rule needs a duration; leave the rule out for no limit".into(),
                    ));
                }
                Err(message) => {
                    return Err(RulesError::at(
                        text,
                        rule.max_hold.span(),
                        &format!("{path}.max_hold"),
                        message,
                    ));
                }
            };
            rules.leases.push(LeaseRule {
                artifact,
                workflow,
                max_hold,
            });
        }
        Ok(rules)
    }
}

/// A rules file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}{}: {message}", if field.is_empty() { String::new() } else { format!(", field `{field}`") })]
pub struct RulesError {
    /// 1-based line (0 when unknown).
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `workflows.blog.heartbeat`.
    pub field: String,
    pub message: String,
}

impl RulesError {
    fn at(text: &str, span: std::ops::Range<usize>, field: &str, message: String) -> Self {
        let (line, column) = line_col(text, span.start);
        RulesError {
            line,
            column,
            field: field.to_string(),
            message,
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

type Spanned<T> = toml::Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    defaults: Option<LevelFile>,
    #[serde(default)]
    workflows: HashMap<Spanned<String>, LevelFile>,
    #[serde(default)]
    stages: HashMap<Spanned<String>, LevelFile>,
    #[serde(default)]
    leases: Vec<LeaseRuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRuleFile {
    artifact: Spanned<String>,
    workflow: Option<Spanned<String>>,
    max_hold: Spanned<String>,
}

/// One table of windows; `stages` is only meaningful under a workflow.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LevelFile {
    heartbeat: Option<Spanned<String>>,
    accept: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    deadline: Option<Spanned<String>>,
    progress: Option<Spanned<String>>,
    blocked: Option<Spanned<String>>,
    renotify: Option<Spanned<String>>,
    stages: Option<Spanned<HashMap<Spanned<String>, LevelFile>>>,
}

impl LevelFile {
    /// The windows of a table that may not nest stages.
    fn to_overrides(&self, text: &str, path: &str) -> Result<Overrides, RulesError> {
        if let Some(stages) = &self.stages {
            return Err(RulesError::at(
                text,
                stages.span(),
                &format!("{path}.stages"),
                "stages can only be nested under [workflows.<name>]".into(),
            ));
        }
        self.windows(text, path)
    }

    fn windows(&self, text: &str, path: &str) -> Result<Overrides, RulesError> {
        let parse =
            |name: &str, v: &Option<Spanned<String>>| -> Result<Option<Setting>, RulesError> {
                let Some(v) = v else { return Ok(None) };
                parse_setting(v.get_ref()).map(Some).map_err(|message| {
                    RulesError::at(text, v.span(), &format!("{path}.{name}"), message)
                })
            };
        Ok(Overrides {
            heartbeat: parse("heartbeat", &self.heartbeat)?,
            accept: parse("accept", &self.accept)?,
            start: parse("start", &self.start)?,
            deadline: parse("deadline", &self.deadline)?,
            progress: parse("progress", &self.progress)?,
            blocked: parse("blocked", &self.blocked)?,
            renotify: parse("renotify", &self.renotify)?,
        })
    }
}

fn parse_setting(s: &str) -> Result<Setting, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Setting::Off);
    }
    let d = parse_duration(s).map_err(|e| {
        format!("{e}; write a duration such as \"90s\", \"5m\", \"1h 30m\", or \"off\"")
    })?;
    if d.is_zero() {
        return Err("a window of zero would fire at once; use \"off\" to disable".into());
    }
    Ok(Setting::After(d))
}

/// Parses a human duration: `250ms`, `90s`, `5m`, `1h30m`, `1h 30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number at {rest:?}"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let step = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" | "second" | "seconds" => Duration::from_secs(n),
            "m" | "min" | "mins" | "minute" | "minutes" => {
                Duration::from_secs(n.saturating_mul(60))
            }
            "h" | "hr" | "hrs" | "hour" | "hours" => Duration::from_secs(n.saturating_mul(3600)),
            "d" | "day" | "days" => Duration::from_secs(n.saturating_mul(86_400)),
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit after {n} (ms, s, m, h, d)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {other:?} (ms, s, m, h, d)"
                ));
            }
        };
        total = total.saturating_add(step);
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf(s: &str) -> WorkflowId {
        WorkflowId::new(s).expect("valid")
    }
    fn st(s: &str) -> StageName {
        StageName::new(s).expect("valid")
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("5 minutes"), Ok(Duration::from_secs(300)));
        assert!(
            parse_duration("5")
                .expect_err("no unit")
                .contains("missing unit")
        );
        assert!(
            parse_duration("5x")
                .expect_err("bad unit")
                .contains("unknown unit")
        );
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn precedence_is_defaults_workflow_stage_workflow_stage() {
        let rules = Rules::from_toml(
            r#"
[defaults]
heartbeat = "10s"
accept = "1m"
progress = "off"

[workflows.blog]
heartbeat = "20s"
accept = "2m"

[workflows.blog.stages.review]
accept = "4m"

[stages.review]
accept = "3m"
start = "off"
"#,
        )
        .expect("valid rules");
        let other = rules.resolve(&wf("other"), None);
        assert_eq!(other.heartbeat, Some(Duration::from_secs(10)));
        assert_eq!(other.accept, Some(Duration::from_secs(60)));
        assert_eq!(other.progress, None);
        assert_eq!(other.blocked, Windows::default().blocked);

        let blog = rules.resolve(&wf("blog"), Some(&st("draft")));
        assert_eq!(blog.heartbeat, Some(Duration::from_secs(20)));
        assert_eq!(blog.accept, Some(Duration::from_secs(120)));

        let other_review = rules.resolve(&wf("other"), Some(&st("review")));
        assert_eq!(other_review.accept, Some(Duration::from_secs(180)));
        assert_eq!(other_review.start, None);

        let blog_review = rules.resolve(&wf("blog"), Some(&st("review")));
        assert_eq!(blog_review.accept, Some(Duration::from_secs(240)));
        assert_eq!(blog_review.heartbeat, Some(Duration::from_secs(20)));
        assert_eq!(blog_review.start, None);
    }

    #[test]
    fn errors_name_line_and_field() {
        let err = Rules::from_toml("[defaults]\nheartbeat = \"30s\"\naccept = \"5 weeks\"\n")
            .expect_err("bad unit");
        assert_eq!((err.line, err.field.as_str()), (3, "defaults.accept"));
        assert!(err.message.contains("unknown unit"), "{err}");
        assert!(
            err.to_string()
                .starts_with("line 3, column 10, field `defaults.accept`"),
            "{err}"
        );

        let err = Rules::from_toml("[defaults]\nhearbeat = \"30s\"\n").expect_err("typo");
        assert_eq!(err.line, 2);
        assert!(err.message.contains("hearbeat"), "{err}");

        let err =
            Rules::from_toml("[workflows.\"bad.name\"]\nheartbeat = \"1s\"\n").expect_err("bad id");
        assert_eq!(err.line, 1);
        assert_eq!(err.field, "workflows.bad.name");

        let err = Rules::from_toml("[stages.review]\nstart = \"0s\"\n").expect_err("zero");
        assert_eq!((err.line, err.field.as_str()), (2, "stages.review.start"));

        let err = Rules::from_toml("[defaults]\nheartbeat = 30\n").expect_err("number");
        assert_eq!(err.line, 2);
    }
}
