//! A tracing layer that records every event with its fields and those of the spans it is in,
//! for the tests that read what muster logs (through `#[path]`).

#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a different subset

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tracing::field::{Field as TracingField, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

pub type Fields = BTreeMap<String, String>;

/// Records every event with its own fields and those of every span it is in.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<Fields>>>);

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &TracingField, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &TracingField, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let mut fields = Fields::new();
        attributes.record(&mut Collect(&mut fields));
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        if let Some(span) = context.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(&mut Collect(fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        let mut fields = Fields::new();
        fields.insert("level".to_owned(), event.metadata().level().to_string());
        for span in context.event_scope(event).into_iter().flatten() {
            if let Some(span_fields) = span.extensions().get::<Fields>() {
                for (name, value) in span_fields {
                    fields.entry(name.clone()).or_insert_with(|| value.clone());
                }
            }
        }
        event.record(&mut Collect(&mut fields));
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(fields);
    }
}

pub fn with_message<'a>(events: &'a [Fields], message: &str) -> Vec<&'a Fields> {
    events.iter().filter(|event| event.get("message").map(String::as_str) == Some(message)).collect()
}

pub fn field<'a>(event: &'a Fields, name: &str) -> Option<&'a str> {
    event.get(name).map(String::as_str)
}
