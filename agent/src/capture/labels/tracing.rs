//! Labels from `tracing` spans: a `tracing_subscriber::Layer` that, while a
//! span is entered, adds chosen fields of it (and optionally its id) to the
//! thread's labels, so services already instrumented with `tracing` get
//! labelled CPU profiles with one line of setup.

use std::cell::RefCell;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Subscriber, span};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::{Enter, LabelSet, by_id, current_id};

/// Labels CPU samples with fields of the spans they run in.
///
/// ```no_run
/// use tracing_subscriber::Layer;
/// use tracing_subscriber::filter::LevelFilter;
/// use tracing_subscriber::layer::SubscriberExt;
/// use tracing_subscriber::util::SubscriberInitExt;
/// // tower-http's request spans have `method`, `uri` and `version`; they
/// // are DEBUG-level, so the layer has its own filter.
/// tracing_subscriber::registry()
///     .with(profscope_agent::labels::TracingLayer::new(["method", "tenant"]).with_filter(LevelFilter::DEBUG))
///     .init();
/// ```
///
/// A field is labelled by its name; `trace_id` works the same way when the
/// service records it as a span field. Nested spans add their fields to the
/// outer ones', and to whatever labels are current when the span is entered
/// (a route layer's, a scope's).
#[derive(Debug, Clone)]
pub struct TracingLayer {
    fields: Arc<[String]>,
    span_id: bool,
}

impl TracingLayer {
    /// A layer labelling with the span fields named `fields`.
    pub fn new<S: Into<String>>(fields: impl IntoIterator<Item = S>) -> Self {
        TracingLayer {
            fields: fields.into_iter().map(Into::into).collect(),
            span_id: false,
        }
    }

    /// Also label with `span_id` (unbounded: past the label-set cap such
    /// samples read `labels=other`).
    pub fn with_span_id(mut self, on: bool) -> Self {
        self.span_id = on;
        self
    }
}

/// The chosen fields of one span, and the set last made of them.
struct SpanLabels {
    pairs: Vec<(String, String)>,
    /// (outer set id, the outer set plus `pairs`).
    cached: Option<(u32, LabelSet)>,
}

struct Pick<'a> {
    fields: &'a [String],
    pairs: &'a mut Vec<(String, String)>,
}

impl Pick<'_> {
    fn put(&mut self, field: &Field, value: String) {
        if self.fields.iter().any(|f| f == field.name()) {
            match self.pairs.iter_mut().find(|(k, _)| k == field.name()) {
                Some(slot) => slot.1 = value,
                None => self.pairs.push((field.name().to_string(), value)),
            }
        }
    }
}

impl Visit for Pick<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

thread_local! {
    /// Spans entered on this thread that set labels, innermost last.
    static ENTERED: RefCell<Vec<(span::Id, Enter)>> = const { RefCell::new(Vec::new()) };
}

impl<S> tracing_subscriber::Layer<S> for TracingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut pairs = Vec::new();
        attrs.record(&mut Pick {
            fields: &self.fields,
            pairs: &mut pairs,
        });
        if self.span_id {
            pairs.push(("span_id".to_string(), id.into_u64().to_string()));
        }
        if let (false, Some(span)) = (pairs.is_empty(), ctx.span(id)) {
            span.extensions_mut().insert(SpanLabels {
                pairs,
                cached: None,
            });
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let mut pairs = extensions
            .get_mut::<SpanLabels>()
            .map(|l| std::mem::take(&mut l.pairs))
            .unwrap_or_default();
        values.record(&mut Pick {
            fields: &self.fields,
            pairs: &mut pairs,
        });
        if !pairs.is_empty() {
            extensions.replace(SpanLabels {
                pairs,
                cached: None,
            });
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(labels) = extensions.get_mut::<SpanLabels>() else {
            return;
        };
        let outer = current_id();
        let set = match &labels.cached {
            Some((base, set)) if *base == outer => set.clone(),
            _ => {
                let set = by_id(outer).with(labels.pairs.iter().cloned());
                labels.cached = Some((outer, set.clone()));
                set
            }
        };
        ENTERED.with(|e| e.borrow_mut().push((id.clone(), Enter::new(set.id()))));
    }

    fn on_exit(&self, id: &span::Id, _ctx: Context<'_, S>) {
        ENTERED.with(|e| exit(&mut e.borrow_mut(), id));
    }
}

/// Leaves span `id`, in whatever order spans are left (entered guards may
/// be dropped out of order). The innermost: dropping its guard restores
/// the set it replaced. One further out: it leaves the stack without
/// touching the slot, and the span entered after it inherits what it had
/// replaced, so the slot is right once the inner one exits too.
fn exit(entered: &mut Vec<(span::Id, Enter)>, id: &span::Id) {
    let Some(at) = entered.iter().rposition(|(entry, _)| entry == id) else {
        return;
    };
    if at + 1 == entered.len() {
        entered.pop();
        return;
    }
    let (_, enter) = entered.remove(at);
    entered[at].1.0 = enter.0;
    std::mem::forget(enter);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::labels::{LabelSet, current};

    #[test]
    fn spans_exited_out_of_order_leave_no_label_behind() {
        let before = current();
        let a = LabelSet::new([("span", "a")]);
        let b = a.with([("inner", "b")]);
        let mut entered = Vec::new();
        entered.push((span::Id::from_u64(1), Enter::new(a.id())));
        entered.push((span::Id::from_u64(2), Enter::new(b.id())));
        // The outer span exits first: the inner one's labels stay on.
        exit(&mut entered, &span::Id::from_u64(1));
        assert_eq!(current(), b);
        exit(&mut entered, &span::Id::from_u64(2));
        assert_eq!(current(), before);
        assert!(entered.is_empty());
        // An exit of a span never entered changes nothing.
        exit(&mut entered, &span::Id::from_u64(3));
        assert_eq!(current(), before);
    }
}
