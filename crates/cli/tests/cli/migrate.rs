//! `ikit migrate` through the binary: the subcommand is wired to the context (server, login,
//! project from the official variables) and its exit codes reach the shell. The engine's own
//! cases are tested in crates/migrate.

use crate::support::Harness;

const VALUES: [&str; 2] = ["migrated-value-e41d", "second migrated-value-0b7a"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_apply_rollback_through_the_binary() {
    let harness = Harness::start().await;
    std::fs::write(
        harness.work_file(".env"),
        format!("export MIG_ONE={}\nMIG_TWO=\"{}\"\n", VALUES[0], VALUES[1]),
    )
    .unwrap();
    std::fs::write(
        harness.work_file("migrate.toml"),
        "[defaults]\nenvironment = \"dev\"\nfolder = \"/migrated/app\"\n",
    )
    .unwrap();
    let mut env = harness.env();
    env.insert("IKIT_BACKUP_PASSPHRASE".to_owned(), "binary test passphrase".to_owned());

    let plan = harness.ikit_with(&env, &["migrate", "plan", "-m", "migrate.toml", ".env"]).await;
    assert_eq!(plan.code, Some(2), "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("create     dev:/migrated/app/MIG_ONE  (.env:1)"),
        "{}",
        plan.stdout
    );
    plan.leaks_none(&VALUES);

    let args = ["migrate", "apply", "-m", "migrate.toml", ".env", "--backup-out", "before.age"];
    let apply = harness.ikit_with(&env, &args).await;
    apply.ok();
    assert!(apply.stdout.contains("2 written"), "{}", apply.stdout);
    assert!(apply.stderr.contains("dev:/migrated/app: 2/2 keys written"), "{}", apply.stderr);
    apply.leaks_none(&VALUES);
    // recorded: the run file and the default SQLite audit log under the working directory
    assert!(harness.work_file(".ikit/audit.db").exists());
    let runs = std::fs::read_dir(harness.work_file(".ikit/migrations")).unwrap().count();
    assert!(runs >= 3, "plan key, run file, audit spool: {runs} entries");
    let again = harness.ikit_with(&env, &["migrate", "plan", "-m", "migrate.toml", ".env"]).await;
    again.ok();

    let status = harness.ikit_with(&env, &["migrate", "status"]).await;
    status.ok();
    assert!(status.stdout.contains("apply     done"), "{}", status.stdout);

    let rollback = harness.ikit_with(&env, &["migrate", "rollback", "before.age", "--yes"]).await;
    rollback.ok();
    assert!(
        rollback.stdout.contains("delete         dev:/migrated/app/MIG_ONE"),
        "{}",
        rollback.stdout
    );
    assert!(rollback.stdout.contains("verified"), "{}", rollback.stdout);
    rollback.leaks_none(&VALUES);
    let after = harness.ikit_with(&env, &["migrate", "plan", "-m", "migrate.toml", ".env"]).await;
    assert_eq!(after.code, Some(2), "the rollback left the keys: {}", after.stdout);
}
