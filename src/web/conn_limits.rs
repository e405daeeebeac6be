//! What one client may hold: a deadline on reading a request's body, and a
//! cap on open connections per client IP. (Headers have actix's own
//! deadline, `client_request_timeout`.)
//!
//! - [`body_deadline`]: a request whose body has not fully arrived
//!   `http.body_timeout_secs` after its handler started reading gets 408 and
//!   the connection is closed. WebSocket upgrades are exempt (their "body"
//!   is the conversation).
//! - [`ConnCounter`]: counted when the connection is accepted (`on_connect`),
//!   released when it closes. A connection beyond `http.max_connections_per_ip`
//!   from one address gets 429 and is closed on its first request. Peers in
//!   `trusted_proxies` are not capped (a proxy carries everybody's
//!   connections; it enforces its own limits).

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use bytes::Bytes;
use futures_util::Stream;

use super::AppState;

/// Open connections per client address.
#[derive(Default)]
pub struct ConnCounter(Mutex<HashMap<IpAddr, u32>>);

/// One accepted connection, counted until it closes (kept in the
/// connection's data).
pub struct ConnSlot {
    counter: Arc<ConnCounter>,
    ip: IpAddr,
    /// Over the cap when it was accepted.
    pub over: bool,
}

impl ConnCounter {
    /// Counts a new connection from `ip`; `over` when it exceeds `cap`.
    pub fn open(self: &Arc<Self>, ip: IpAddr, cap: u32) -> ConnSlot {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        *n += 1;
        ConnSlot {
            counter: self.clone(),
            ip,
            over: *n > cap,
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut map = self.counter.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Refuses the requests of a connection over its address's cap.
pub async fn connection_cap(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.conn_data::<ConnSlot>().is_some_and(|s| s.over) {
        let res = HttpResponse::TooManyRequests()
            .force_close()
            .json(serde_json::json!({ "error": "too many connections from your address" }));
        return Ok(req.into_response(res));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// A body that must arrive before a deadline.
struct Deadlined {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timed_out: Rc<Cell<bool>>,
}

impl Stream for Deadlined {
    type Item = Result<Bytes, PayloadError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.timed_out.set(true);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body took too long",
            )))));
        }
        Poll::Pending
    }
}

fn is_upgrade(req: &ServiceRequest) -> bool {
    req.headers().contains_key(header::UPGRADE)
}

/// 408 and a closed connection for a body that does not arrive in time.
pub async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let secs = req
        .app_data::<web::Data<AppState>>()
        .map_or(30, |s| s.config.http.body_timeout_secs);
    if is_upgrade(&req) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let timed_out = Rc::new(Cell::new(false));
    let body = Deadlined {
        inner: req.take_payload(),
        sleep: Box::pin(tokio::time::sleep(Duration::from_secs(secs))),
        timed_out: timed_out.clone(),
    };
    req.set_payload(Payload::from(
        Box::pin(body) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
    ));
    let res = next.call(req).await?;
    if timed_out.get() {
        tracing::info!("request body timed out: closing the connection");
        let (http_req, _) = res.into_parts();
        let res = HttpResponse::RequestTimeout()
            .force_close()
            .json(serde_json::json!({ "error": "the request body took too long" }));
        return Ok(ServiceResponse::new(http_req, res));
    }
    Ok(res.map_into_boxed_body())
}
