//! A hedged round: an attempt, and a second copy to another endpoint when
//! the first is slow; the first good answer wins.

use std::pin::pin;
use std::time::Duration;

use tower_service::Service;

use super::call::Call;
use super::policy::Reason;
use super::replayable::ReplayableRequest;
use super::send::Finished;
use crate::request::BalancedResponse;
use crate::{BoxError, Endpoint, Error};

/// What a round ends with: the outcome that decides what comes next, and
/// the reason to retry it (`None`: return it).
type Decided<R> = (Finished<R>, Option<Reason>);

impl<S> Call<S> {
    /// Sends `request`; if it has not answered after `delay`, sends a copy
    /// of `template` (budget allowing) away from every endpoint tried and
    /// from the slow one, and takes the first good answer. The attempt
    /// that loses is dropped, which the balancer records as a cancellation.
    pub(super) async fn hedged<Req>(
        &mut self,
        request: Req::Sent,
        template: &Req::Template,
        delay: Duration,
    ) -> Result<Decided<S::Response>, Error>
    where
        Req: ReplayableRequest,
        S: Service<Req::Sent>,
        S::Response: BalancedResponse,
        S::Error: Into<BoxError>,
    {
        let avoid = self.avoid.clone();
        let sent = self.send(request, avoid, false).await?;
        let primary_context = sent.context();
        let name = self.service.name.clone();
        let buffer = self.config.buffer_responses;
        let mut primary = pin!(sent.finish(name.clone(), buffer));
        tokio::select! {
            biased;
            finished = &mut primary => {
                let reason = self.judge(template, &finished);
                return Ok((finished, reason));
            }
            () = tokio::time::sleep(delay) => {}
        }

        // Slow: hedge, if the budget allows.
        let copy = if self.service.track.withdraw() {
            Req::replay(template)
        } else {
            crate::metrics::budget_refusal(&self.service.name);
            tracing::debug!(
                target: "tower_lb::retry",
                service = %self.service.name,
                "no hedge: the retry budget is spent"
            );
            None
        };
        let Some(copy) = copy else {
            let finished = primary.await;
            let reason = self.judge(template, &finished);
            return Ok((finished, reason));
        };
        let slow = primary_context.endpoint().cloned();
        let mut avoid = self.avoid.clone();
        if let Some(endpoint) = &slow {
            avoid.insert(endpoint.clone());
        }
        tracing::debug!(
            target: "tower_lb::retry",
            service = %self.service.name,
            attempt = self.attempts.count().saturating_add(1),
            slow_endpoint = slow.as_ref().map_or("unknown", Endpoint::key),
            delay_ms = delay.as_secs_f64() * 1e3,
            "hedging"
        );
        let hedge = match self.send(copy, avoid, true).await {
            Ok(sent) => sent,
            // The hedge could not be sent: the primary decides.
            Err(_) => {
                let finished = primary.await;
                let reason = self.judge(template, &finished);
                return Ok((finished, reason));
            }
        };
        let hedge_context = hedge.context();
        let mut hedge = pin!(hedge.finish(name, buffer));
        // The first good answer wins; when both fail, the later failure
        // decides.
        let mut primary_done: Option<Decided<S::Response>> = None;
        let mut hedge_done: Option<Decided<S::Response>> = None;
        loop {
            tokio::select! {
                finished = &mut primary, if primary_done.is_none() => {
                    let reason = self.judge(template, &finished);
                    if reason.is_none() || hedge_done.is_some() {
                        if hedge_done.is_none() {
                            self.abandoned(hedge_context.endpoint());
                        }
                        return Ok((finished, reason));
                    }
                    primary_done = Some((finished, reason));
                }
                finished = &mut hedge, if hedge_done.is_none() => {
                    let reason = self.judge(template, &finished);
                    if reason.is_none() || primary_done.is_some() {
                        if primary_done.is_none() {
                            self.abandoned(primary_context.endpoint());
                        }
                        return Ok((finished, reason));
                    }
                    hedge_done = Some((finished, reason));
                }
            }
        }
    }

    /// The attempt that lost a race is dropped unanswered: its endpoint
    /// still belongs in the record of the call.
    fn abandoned(&mut self, endpoint: Option<&Endpoint>) {
        self.attempts.record(endpoint.cloned());
    }
}
