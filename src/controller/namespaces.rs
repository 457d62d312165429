//! Watching several namespaces (`tierguard run --namespace a --namespace b`) through one store.
//!
//! A namespaced install may list only the namespaces it is granted, so one watch per namespace is
//! merged into one stream for the Controller's single reflector. The reflector replaces its whole
//! store at the end of each (re)list, which would drop the other namespaces' objects; the merge
//! therefore lists once for all of them (the store is ready when every namespace has listed), and
//! later relists of one namespace become plain applies plus a delete for each object of that
//! namespace that the relist no longer returned.

use std::collections::{BTreeSet, HashMap};

use futures::stream::{BoxStream, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

type Item<K> = Result<Event<K>, watcher::Error>;

/// The watch of `namespaces` (all namespaces when empty), as one event stream for `reader`'s
/// reflector.
pub fn watch<K>(
    client: &Client,
    namespaces: &[String],
    config: watcher::Config,
    reader: Store<K>,
) -> BoxStream<'static, Item<K>>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    match namespaces {
        [] => watcher(Api::all(client.clone()), config)
            .default_backoff()
            .boxed(),
        [one] => watcher(Api::namespaced(client.clone(), one), config)
            .default_backoff()
            .boxed(),
        several => {
            let streams = several.iter().enumerate().map(|(i, ns)| {
                watcher(Api::<K>::namespaced(client.clone(), ns), config.clone())
                    .default_backoff()
                    .map(move |event| event.map(|e| (i, e)))
                    .boxed()
            });
            let mut merge = Merge::new(several.to_vec(), reader);
            futures::stream::select_all(streams)
                .flat_map(move |item| futures::stream::iter(merge.next(item)))
                .boxed()
        }
    }
}

/// The owned objects of `namespaces` (all when empty) that carry `labels`, metadata only.
pub fn watch_metadata<K>(
    client: &Client,
    namespaces: &[String],
    config: watcher::Config,
) -> BoxStream<'static, Result<kube::core::PartialObjectMeta<K>, watcher::Error>>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let apis: Vec<Api<kube::core::PartialObjectMeta<K>>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let streams = apis.into_iter().map(move |api| {
        watcher(api, config.clone())
            .default_backoff()
            .touched_objects()
            .boxed()
    });
    futures::stream::select_all(streams).boxed()
}

/// The state of the merge: which namespaces have listed once, and what each relist returned.
struct Merge<K: Resource<DynamicType = ()> + Clone + 'static> {
    namespaces: Vec<String>,
    reader: Store<K>,
    /// Namespaces whose first list has not ended yet; the store is ready when none is left.
    first_list: BTreeSet<usize>,
    started: bool,
    /// Names each namespace's relist in progress has returned so far.
    relisting: HashMap<usize, BTreeSet<String>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Merge<K> {
    fn new(namespaces: Vec<String>, reader: Store<K>) -> Self {
        Merge {
            first_list: (0..namespaces.len()).collect(),
            namespaces,
            reader,
            started: false,
            relisting: HashMap::new(),
        }
    }

    fn next(&mut self, item: Result<(usize, Event<K>), watcher::Error>) -> Vec<Item<K>> {
        let (ns, event) = match item {
            Ok(tagged) => tagged,
            Err(e) => return vec![Err(e)],
        };
        let initial = !self.first_list.is_empty();
        match event {
            Event::Init => {
                self.relisting.insert(ns, BTreeSet::new());
                if self.started {
                    vec![]
                } else {
                    self.started = true;
                    vec![Ok(Event::Init)]
                }
            }
            Event::InitApply(obj) => {
                self.relisting.entry(ns).or_default().insert(obj.name_any());
                if initial {
                    vec![Ok(Event::InitApply(obj))]
                } else {
                    vec![Ok(Event::Apply(obj))]
                }
            }
            Event::InitDone => {
                let listed = self.relisting.remove(&ns).unwrap_or_default();
                if initial {
                    self.first_list.remove(&ns);
                    return if self.first_list.is_empty() {
                        vec![Ok(Event::InitDone)]
                    } else {
                        vec![]
                    };
                }
                let namespace = &self.namespaces[ns];
                self.reader
                    .state()
                    .into_iter()
                    .filter(|obj| obj.namespace().as_deref() == Some(namespace.as_str()))
                    .filter(|obj| !listed.contains(&obj.name_any()))
                    .map(|gone| Ok(Event::Delete((*gone).clone())))
                    .collect()
            }
            event @ (Event::Apply(_) | Event::Delete(_)) => vec![Ok(event)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;

    fn cm(ns: &str, name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.namespace = Some(ns.into());
        cm.metadata.name = Some(name.into());
        cm
    }

    /// Two namespaces through one store: both lists land, a relist of one keeps the other's
    /// objects and drops what the relist no longer returned.
    #[test]
    fn relisting_one_namespace_keeps_the_others() {
        let (reader, mut writer) = reflector::store::<ConfigMap>();
        let mut merge = Merge::new(vec!["a".into(), "b".into()], reader.clone());
        let mut feed = |merge: &mut Merge<ConfigMap>, ns: usize, event: Event<ConfigMap>| {
            for out in merge.next(Ok((ns, event))) {
                writer.apply_watcher_event(&out.unwrap());
            }
        };
        let names = |reader: &Store<ConfigMap>| {
            let mut n: Vec<String> = reader
                .state()
                .iter()
                .map(|o| format!("{}/{}", o.namespace().unwrap(), o.name_any()))
                .collect();
            n.sort();
            n
        };
        feed(&mut merge, 0, Event::Init);
        feed(&mut merge, 0, Event::InitApply(cm("a", "x")));
        feed(&mut merge, 1, Event::Init);
        feed(&mut merge, 0, Event::InitApply(cm("a", "y")));
        feed(&mut merge, 0, Event::InitDone);
        assert!(names(&reader).is_empty(), "not ready before b has listed");
        feed(&mut merge, 1, Event::InitApply(cm("b", "z")));
        feed(&mut merge, 1, Event::InitDone);
        assert_eq!(names(&reader), ["a/x", "a/y", "b/z"]);
        // a relists (its watch expired) and y was deleted meanwhile.
        feed(&mut merge, 0, Event::Init);
        feed(&mut merge, 0, Event::InitApply(cm("a", "x")));
        assert_eq!(names(&reader), ["a/x", "a/y", "b/z"]);
        feed(&mut merge, 0, Event::InitDone);
        assert_eq!(names(&reader), ["a/x", "b/z"]);
        feed(&mut merge, 1, Event::Apply(cm("b", "w")));
        feed(&mut merge, 1, Event::Delete(cm("b", "z")));
        assert_eq!(names(&reader), ["a/x", "b/w"]);
    }
}
