//! `dreamstream cluster status`: asks a running control node for its workers
//! (`/api/cluster`, with the metrics token when one is given).

use anyhow::Context;

use super::ServeArgs;

pub fn run(
    url: Option<String>,
    json: bool,
    token: Option<String>,
    serve: &ServeArgs,
) -> anyhow::Result<()> {
    let url = match url {
        Some(u) => u,
        None => format!("http://{}", serve.settings()?.listen),
    };
    actix_web::rt::System::new().block_on(async move {
        let client = awc::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .finish();
        let mut req = client.get(format!("{url}/api/cluster"));
        if let Some(t) = &token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the control node at {url}: {e}"))?;
        match resp.status().as_u16() {
            401 | 403 => anyhow::bail!(
                "the control node at {url} refused: /api/cluster needs the metrics token \
                 (--token or DREAMSTREAM_METRICS_TOKEN) or an address in [ops] allow"
            ),
            200 => {}
            code => anyhow::bail!("the control node at {url} answered {code}"),
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .context("the control node's answer is not JSON")?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        let workers = v["workers"].as_array().cloned().unwrap_or_default();
        println!("{} worker(s)", workers.len());
        println!(
            "{:<24} {:<14} {:<13} {:<6} {:>6} {:>10} {:>9} {:>8} {:>12}",
            "WORKER", "NODE", "PROCESSOR", "STATE", "JOBS", "FAILED", "P50 MS", "BUSY", "HEARTBEAT"
        );
        for w in &workers {
            let hb = w["last_heartbeat_ms"]
                .as_f64()
                .map(|ms| format!("{ms:.0} ms ago"))
                .unwrap_or_else(|| "local".into());
            println!(
                "{:<24} {:<14} {:<13} {:<6} {:>6} {:>10} {:>9.1} {:>7.0}% {:>12}",
                w["id"].as_str().unwrap_or(""),
                w["node"].as_str().unwrap_or(""),
                w["processor"].as_str().unwrap_or(""),
                w["state"].as_str().unwrap_or(""),
                w["jobs_done"].as_u64().unwrap_or(0),
                w["jobs_failed"].as_u64().unwrap_or(0),
                w["job_p50_ms"].as_f64().unwrap_or(0.0),
                w["busy_fraction"].as_f64().unwrap_or(0.0) * 100.0,
                hb
            );
        }
        if let Some(ready) = v["ready"].as_array().filter(|r| !r.is_empty()) {
            println!("{} stream(s) waiting for a worker", ready.len());
        }
        Ok(())
    })
}
