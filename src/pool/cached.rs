//! [`CachedPool`]: a per-task handle that caches the pool's endpoint set.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::Error;
use crate::balance::PickContext;
use crate::pool::picked::Picked;
use crate::pool::{Pool, Snapshot};

/// A per-task handle to a [`Pool`] that caches its current endpoint set.
/// Made by [`Pool::cached`]; picks take `&mut self`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_lb::{Pool, discover::Fixed};
///
/// let pool = Pool::builder("greet", Fixed::new(["127.0.0.1:5001", "127.0.0.1:5002"])?).build();
/// pool.ready().await?;
/// let mut local = pool.cached();
/// let picked = local.pick()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CachedPool {
    pool: Pool,
    cache: arc_swap::Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>,
}

impl CachedPool {
    /// A cache of `pool`'s shared snapshot, for [`Pool::cached`].
    pub(super) fn new(pool: Pool) -> Self {
        let cache = arc_swap::Cache::new(pool.shared.snapshot.clone());
        CachedPool { pool, cache }
    }

    /// [`Pool::pick`], through the cache.
    #[inline]
    pub fn pick(&mut self) -> Result<Picked, Error> {
        let ctx = PickContext::new(&self.pool.shared.service);
        self.pool.ensure_started();
        let snapshot = self.cache.load();
        self.pool.pick_from(snapshot, &ctx)
    }

    /// [`Pool::pick_with`], through the cache.
    #[inline]
    pub fn pick_with(&mut self, ctx: &PickContext<'_>) -> Result<Picked, Error> {
        self.pool.ensure_started();
        let snapshot = self.cache.load();
        self.pool.pick_from(snapshot, ctx)
    }

    /// The service's name beside a [`pick_with`](Self::pick_with) through
    /// the cache: the name borrowed, not counted, for each pick.
    #[inline]
    pub(crate) fn picker(
        &mut self,
    ) -> (
        &str,
        impl FnOnce(&PickContext<'_>) -> Result<Picked, Error> + '_,
    ) {
        let Self { pool, cache } = self;
        let pool = &*pool;
        (&pool.shared.service, move |ctx: &PickContext<'_>| {
            pool.ensure_started();
            pool.pick_from(cache.load(), ctx)
        })
    }

    /// The pool behind the cache.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl fmt::Debug for CachedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CachedPool").field(&self.pool).finish()
    }
}
