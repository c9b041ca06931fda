//! The pick itself, and the filters every balancer's pick goes through:
//! slow start and endpoints to avoid.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::Error;
use crate::balance::{PickContext, Picker, rng};
use crate::pool::members::Members;
use crate::pool::picked::Picked;
use crate::pool::{Pool, Snapshot};

impl Pool {
    /// The pick itself, from a snapshot already in hand.
    #[inline]
    pub(super) fn pick_from(
        &self,
        snapshot: &Snapshot,
        ctx: &PickContext<'_>,
    ) -> Result<Picked, Error> {
        let members = &snapshot.members;
        let filled;
        let ctx = if self.shared.total_in_flight.is_some() || self.shared.rng.is_some() {
            filled = PickContext {
                total_in_flight: self
                    .shared
                    .total_in_flight
                    .as_ref()
                    .map(|total| total.load(Ordering::Relaxed)),
                rng: self.shared.rng.as_deref(),
                ..*ctx
            };
            &filled
        } else {
            ctx
        };
        let Some(mut index) = snapshot
            .picker
            .pick(members, ctx)
            .filter(|&i| i < members.len())
        else {
            return Err(if snapshot.ready {
                self.no_endpoints()
            } else {
                Error::NotReady {
                    service: self.shared.service.clone(),
                    waited: Duration::ZERO,
                    last_error: None,
                }
            });
        };
        if let Some(window) = self.shared.slow_start {
            index = ramped(members, ctx, &*snapshot.picker, index, window);
        }
        if ctx.avoids_any() && ctx.avoids(members[index].endpoint()) {
            index = avoiding(members, ctx, &*snapshot.picker)
                .or_else(|| least_recently_avoided(members, ctx))
                .unwrap_or(index);
        }
        Ok(Picked::new(members[index].clone()))
    }

    fn no_endpoints(&self) -> Error {
        Error::NoEndpoints {
            service: self.shared.service.clone(),
        }
    }
}

/// Slow start, for any balancer: an endpoint `f` of the way through its
/// ramp keeps a pick with probability `f` (at least 10%, as Envoy's default
/// minimum weight); otherwise the picker is asked once more.
#[inline]
fn ramped(
    members: &Members,
    ctx: &PickContext<'_>,
    picker: &dyn Picker,
    index: usize,
    window: Duration,
) -> usize {
    let state = members[index].state();
    let fraction = state.ramp_fraction(state.recent_now(), window).max(0.1);
    if fraction >= 1.0 || rng::unit_from(ctx.rng) <= fraction {
        return index;
    }
    picker
        .pick(members, ctx)
        .filter(|&i| i < members.len())
        .unwrap_or(index)
}

/// The safety net behind every balancer for [`PickContext::avoid`]: ask
/// the picker twice more (a load-aware picker then still weighs load),
/// then take the first eligible endpoint from a random start. `None` when
/// every endpoint is avoided.
#[cold]
fn avoiding(members: &Members, ctx: &PickContext<'_>, picker: &dyn Picker) -> Option<usize> {
    for _ in 0..2 {
        if let Some(i) = picker.pick(members, ctx).filter(|&i| i < members.len())
            && !ctx.avoids(members[i].endpoint())
        {
            return Some(i);
        }
    }
    let start = ctx.random_below(members.len());
    (0..members.len())
        .map(|step| (start + step) % members.len())
        .find(|&i| !ctx.avoids(members[i].endpoint()))
}

/// When every endpoint is avoided: the one avoided longest ago (the first
/// in the set's order that is still a member), so a call that outlives the
/// pool's size cycles through the endpoints instead of repeating the last.
#[cold]
fn least_recently_avoided(members: &Members, ctx: &PickContext<'_>) -> Option<usize> {
    ctx.avoid?.iter().find_map(|avoided| {
        members
            .iter()
            .position(|m| m.endpoint().same_instance(avoided))
    })
}
