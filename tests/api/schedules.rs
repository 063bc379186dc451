//! The schedule endpoints: `GET /schedules`, `GET /schedules/<id>`, `POST /schedules/<id>/pause`,
//! `/resume` and `/run`, against a live `cortex-api` with an operate token (the schedule
//! actions need one) — the same operations as `cortex schedule`.
use crate::support::api::*;
use crate::support::*;

#[test]
fn schedule_endpoints_list_pause_resume_and_run() {
    let h = TestHome::new();
    h.cortex_ok(&["schedule", "add", "--name", "nightly", "--cron", "0 3 * * *", "--", "true"]);
    let id = h.read_json("coordination/schedules.json")["schedules"][0]["schedule_id"].as_str().unwrap().to_string();
    let api = Api::start_operated(&h);

    let (code, list) = api.get("/schedules");
    assert_eq!(code, 200, "{list}");
    let s = &list["schedules"][0];
    assert_eq!(s["name"], "nightly", "{list}");
    assert!(s["next_run_at"].is_string(), "{list}");

    let (code, one) = api.get("/schedules/nightly");
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["schedule_id"], id.as_str());

    let (code, r) = api.post("/schedules/nightly/pause", br#"{"reason": "maintenance"}"#);
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["changed"], true);
    let stored = &h.read_json("coordination/schedules.json")["schedules"][0];
    assert_eq!(stored["state"], "paused", "{stored}");
    assert_eq!(stored["reason"], "maintenance", "{stored}");
    assert!(stored["paused_by"].as_str().unwrap().contains("operator"), "{stored}");
    let (code, again) = api.post("/schedules/nightly/pause", b"");
    assert_eq!((code, &again["changed"]), (200, &serde_json::json!(false)), "{again}");

    let (code, r) = api.post(&format!("/schedules/{id}/resume"), b"");
    assert_eq!(code, 200, "{r}");
    assert_eq!(h.read_json("coordination/schedules.json")["schedules"][0]["state"], "active");

    let (code, r) = api.post("/schedules/nightly/run", b"");
    assert_eq!(code, 200, "{r}");
    let task_id = r["task_id"].as_str().unwrap();
    assert!(task_id.starts_with(&format!("sched-{id}-manual-")), "{r}");
    let pending = &h.read_json("coordination/schedules.json")["schedules"][0]["pending_runs"];
    assert_eq!(pending[0]["task_id"], task_id, "the run request waits for the coordinator: {pending}");
    assert_eq!(h.events_of("schedule_run_requested").len(), 1);

    assert_eq!(api.get("/schedules/nosuch").0, 404);
    assert_eq!(api.post("/schedules/nosuch/pause", b"").0, 404);
    assert_eq!(api.get("/schedules/nightly/pause").0, 405);
    assert_eq!(api.post("/schedules/nightly/pause", br#"{"reason": 5}"#).0, 400);
}
