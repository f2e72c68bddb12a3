//! `check-prerequisites`: what must hold before a migration can run, checked with reads only.
//! Each check is one line with a fix hint when it fails. Infisical has no way to ask what an
//! identity may write without writing, so write permission is reported as not checked.

use std::collections::BTreeSet;
use std::fmt;

use ikit_client::{Client, ClientError, FolderQuery};

use crate::backup::{folder_exists, split_folder};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    /// Not decided without writing; not a failure.
    Note,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub status: Status,
    pub name: String,
    pub detail: String,
    /// How to fix a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.status {
            Status::Ok => "ok  ",
            Status::Fail => "FAIL",
            Status::Note => "note",
        };
        write!(f, "{mark}  {}: {}", self.name, self.detail)?;
        if let Some(hint) = &self.hint {
            write!(f, " (fix: {hint})")?;
        }
        Ok(())
    }
}

/// The checks, in order; later ones are skipped when an earlier one makes them meaningless.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|check| check.status != Status::Fail)
    }

    pub fn render(&self) -> String {
        self.checks.iter().map(|check| format!("{check}\n")).collect()
    }

    fn push(&mut self, status: Status, name: &str, detail: String, hint: Option<&str>) {
        self.checks.push(Check {
            status,
            name: name.to_owned(),
            detail,
            hint: hint.map(str::to_owned),
        });
    }
}

/// Checks the server, the login, the project, its environments and the target folders
/// (`(environment, folder)`). Sends only reads (and the login).
pub async fn check(
    client: &Client,
    project_id: &str,
    folders: &BTreeSet<(String, String)>,
) -> Report {
    let mut report = Report::default();
    let unreachable = |report: &mut Report, error: &ClientError| {
        report.push(
            Status::Fail,
            "server",
            format!("not reachable: {error}"),
            Some("check INFISICAL_API_URL / --domain and that the server is up"),
        );
    };
    let refused = |report: &mut Report, error: &ClientError| {
        report.push(Status::Ok, "server", "infisical answered".to_owned(), None);
        report.push(
            Status::Fail,
            "auth",
            format!("login refused: {error}"),
            Some("check the machine identity's client id and secret, or the token"),
        );
    };
    // A fixed token "logs in" without a request, so the server is only known to answer once the
    // project listing came back.
    if let Err(error) = client.login().await {
        if error.is_unreachable() {
            unreachable(&mut report, &error);
        } else {
            refused(&mut report, &error);
        }
        return report;
    }
    let projects = match client.list_projects().await {
        Ok(projects) => projects,
        Err(error) if error.is_unreachable() => {
            unreachable(&mut report, &error);
            return report;
        }
        Err(error @ ClientError::Auth { .. }) => {
            refused(&mut report, &error);
            return report;
        }
        Err(error) => {
            report.push(Status::Ok, "server", "infisical answered".to_owned(), None);
            report.push(Status::Ok, "auth", "logged in".to_owned(), None);
            report.push(
                Status::Fail,
                "project",
                format!("cannot list projects: {error}"),
                Some("give the identity access to the project (service tokens cannot list projects: use a machine identity)"),
            );
            return report;
        }
    };
    report.push(Status::Ok, "server", "infisical answered".to_owned(), None);
    report.push(Status::Ok, "auth", "logged in".to_owned(), None);
    let Some(project) = projects.iter().find(|project| project.id == project_id) else {
        report.push(
            Status::Fail,
            "project",
            format!("{project_id} is not visible to this identity"),
            Some("check --projectId / INFISICAL_PROJECT_ID, or add the identity to the project"),
        );
        return report;
    };
    report.push(Status::Ok, "project", format!("{} ({project_id})", project.name), None);
    let environments: BTreeSet<&str> =
        folders.iter().map(|(environment, _)| environment.as_str()).collect();
    let mut missing_environment = BTreeSet::new();
    for environment in environments {
        if project.environments.iter().any(|known| known.slug == environment) {
            report.push(Status::Ok, "environment", environment.to_owned(), None);
        } else {
            missing_environment.insert(environment);
            report.push(
                Status::Fail,
                "environment",
                format!("{environment} does not exist in the project"),
                Some("create it in the project settings, or fix the mapping's environment"),
            );
        }
    }
    for (environment, folder) in folders {
        if missing_environment.contains(environment.as_str()) {
            continue;
        }
        let label = format!("{environment}:{folder}");
        match folder_exists(client, project_id, environment, folder).await {
            Ok(true) => {
                let query = FolderQuery::new(project_id, environment, folder)
                    .include_imports(false)
                    .expand_references(false);
                match client.list_secrets(&query).await {
                    Ok(_) => report.push(Status::Ok, "folder", format!("{label} readable"), None),
                    Err(error @ ClientError::PermissionDenied { .. }) => report.push(
                        Status::Fail,
                        "folder",
                        format!("{label}: {error}"),
                        Some("grant the identity read access to this path"),
                    ),
                    Err(error) => {
                        report.push(Status::Fail, "folder", format!("{label}: {error}"), None)
                    }
                }
            }
            Ok(false) => {
                let parent = nearest_existing_parent(client, project_id, environment, folder).await;
                report.push(
                    Status::Ok,
                    "folder",
                    format!("{label} missing; apply creates it under {parent}"),
                    None,
                );
            }
            Err(error) => report.push(
                Status::Fail,
                "folder",
                format!("{label}: {error}"),
                Some("grant the identity read access to folders in this environment"),
            ),
        }
    }
    report.push(
        Status::Note,
        "write permission",
        "not checked: infisical cannot be asked without writing; apply names any refused folder"
            .to_owned(),
        None,
    );
    report
}

async fn nearest_existing_parent(
    client: &Client,
    project_id: &str,
    environment: &str,
    folder: &str,
) -> String {
    let mut probe = split_folder(folder).map(|(parent, _)| parent);
    while let Some(candidate) = probe {
        if matches!(folder_exists(client, project_id, environment, &candidate).await, Ok(true)) {
            return candidate;
        }
        probe = split_folder(&candidate).map(|(parent, _)| parent);
    }
    "/".to_owned()
}
