//! [`Outputs`], the outputs of a successful group by name, and [`IntoIter`].

use std::fmt;
use std::ops::Index;

use crate::cancel::Name;

/// The outputs of a successful [`Group`](crate::Group), addressable by name and iterable in spawn order.
///
/// ```
/// # use muster_core as muster;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut group = muster::Group::new();
/// group.spawn("a", async { Ok::<_, std::io::Error>(1) })?;
/// group.spawn("b", async { Ok::<_, std::io::Error>(2) })?;
/// let mut outputs = group.wait().await?;
/// assert_eq!(outputs.get("b"), Some(&2));
/// assert_eq!(outputs.take("a"), Some(1));
/// assert_eq!(outputs.into_iter().collect::<Vec<_>>(), [("b".into(), 2)]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Outputs<T> {
    pub(super) entries: Vec<(Name, Option<T>)>,
}

impl<T> Outputs<T> {
    fn entry(&mut self, name: &str) -> Option<&mut Option<T>> {
        self.entries.iter_mut().find(|(candidate, _)| candidate == name).map(|(_, value)| value)
    }

    /// The output of the task named `name`, unless there is none or it was taken.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.iter().find(|(candidate, _)| *candidate == name).map(|(_, value)| value)
    }

    /// Moves the output of the task named `name` out, for building typed results without
    /// clones.
    pub fn take(&mut self, name: &str) -> Option<T> {
        self.entry(name)?.take()
    }

    /// The names of the outputs not taken, in spawn order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(name, _)| name)
    }

    /// The outputs not taken, with their names, in spawn order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.entries.iter().filter_map(|(name, value)| Some((&**name, value.as_ref()?)))
    }

    /// The number of outputs not taken.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether every output has been taken (or the group was empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Index<&str> for Outputs<T> {
    type Output = T;

    /// # Panics
    ///
    /// If there is no output named `name`; use [`Outputs::get`] to check.
    fn index(&self, name: &str) -> &T {
        match self.get(name) {
            Some(value) => value,
            None => panic!("no output named `{name}`"),
        }
    }
}

impl<T> Outputs<Option<T>> {
    /// The outputs of tasks that may produce nothing (`None`), without those: an absent output
    /// reads like a taken one. Reuses the allocation.
    ///
    /// ```
    /// # use muster_core as muster;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut group = muster::Group::new();
    /// group.spawn("offers", async { Ok::<_, std::io::Error>(None::<u32>) })?;
    /// group.spawn("profile", async { Ok::<_, std::io::Error>(Some(7)) })?;
    /// let outputs = group.wait().await?.flatten();
    /// assert_eq!(outputs.iter().collect::<Vec<_>>(), [("profile", &7)]);
    /// # Ok(()) }
    /// ```
    pub fn flatten(self) -> Outputs<T> {
        Outputs { entries: self.entries.into_iter().map(|(name, value)| (name, value.flatten())).collect() }
    }
}

impl<T> FromIterator<(Name, T)> for Outputs<T> {
    fn from_iter<I: IntoIterator<Item = (Name, T)>>(iter: I) -> Self {
        Self { entries: iter.into_iter().map(|(name, value)| (name, Some(value))).collect() }
    }
}

impl<T> IntoIterator for Outputs<T> {
    type Item = (Name, T);
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter(self.entries.into_iter())
    }
}

/// The outputs of a group by value, in spawn order; see [`Outputs`].
#[derive(Debug)]
pub struct IntoIter<T>(std::vec::IntoIter<(Name, Option<T>)>);

impl<T> Iterator for IntoIter<T> {
    type Item = (Name, T);

    fn next(&mut self) -> Option<(Name, T)> {
        self.0.find_map(|(name, value)| Some((name, value?)))
    }
}

impl<T: fmt::Debug> fmt::Debug for Outputs<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
