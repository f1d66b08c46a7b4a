//! Control edges (`edge_type: "control"`), as NodeTool runs them.
//!
//! A *controller* (typically an agent) sends control events to the nodes its control edges point
//! at; a *controlled* node runs once per `run` event, never on its own:
//!
//! - A controller emits an event on the source handle of a control edge (NodeTool's
//!   `__control__`), or on `__control_output__` (NodeTool's older form, sent along every
//!   control edge). The value is `{"event_type": "run", "properties": {...}}`,
//!   `{"event_type": "stop"}`, a bare property map (read as a `run` event; a nested
//!   `{"properties": {...}}` is unwrapped), or `{"target_node_id": ID, "event": EVENT}` for one
//!   of the controller's targets only.
//! - A controller may also call [`ProcessingContext::run_controlled`] to run one target with
//!   properties and await its outputs (an agent's tool call), and read
//!   [`ProcessingContext::control_context`] to learn its targets and their properties.
//! - A controlled node first waits until each of its wired data inputs has a value (or has
//!   ended), then takes events in order: each `run` merges its properties over the data inputs
//!   and the node's literals (properties the node does not declare are an error) and runs the
//!   node once, sending its outputs downstream as usual; `stop` ends it. It also ends when every
//!   controller has finished.
//!
//! [`ProcessingContext::run_controlled`]: crate::context::ProcessingContext::run_controlled
//! [`ProcessingContext::control_context`]: crate::context::ProcessingContext::control_context

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use nodetool_core::{Error, Result};

use crate::graph::{EdgeType, Graph};
use crate::registry::Registry;

/// The target handle every control edge ends in.
pub const CONTROL_HANDLE: &str = "__control__";
/// NodeTool's older controller output: its value goes along every control edge of the node.
pub const CONTROL_OUTPUT: &str = "__control_output__";

/// A control event, parsed from what a controller emits.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlEvent {
    /// Run the target once with these properties over its inputs.
    Run(Map<String, Value>),
    /// End the target's control loop.
    Stop,
}

/// What a controller's emitted value asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlCommand {
    /// Only this target (one of the controller's), or every target of the edge.
    pub target: Option<String>,
    pub event: ControlEvent,
}

/// Parses a controller's emitted value (see the module docs for the accepted shapes).
/// Pure: suitable for fuzzing.
pub fn parse_control_value(value: &Value) -> Result<ControlCommand> {
    let Value::Object(obj) = value else {
        return Err(Error::invalid_input(format!(
            "a control event must be an object ({{\"event_type\": \"run\", \"properties\": {{...}}}} \
             or a property map), got {}",
            crate::types::type_of(value)
        ))
        .with_operation("control.parse"));
    };
    if let (Some(target), Some(event)) = (obj.get("target_node_id"), obj.get("event")) {
        let Some(target) = target.as_str().filter(|t| !t.is_empty()) else {
            return Err(Error::invalid_input(
                "`target_node_id` of a control event must be a node id",
            )
            .with_operation("control.parse"));
        };
        let inner = parse_control_value(event)?;
        return Ok(ControlCommand {
            target: Some(target.to_owned()),
            event: inner.event,
        });
    }
    let event = match obj.get("event_type") {
        Some(Value::String(t)) if t == "run" => ControlEvent::Run(properties_of(obj)?),
        Some(Value::String(t)) if t == "stop" => ControlEvent::Stop,
        Some(other) => {
            return Err(Error::invalid_input(format!(
                "unknown control event type {other}: expected \"run\" or \"stop\""
            ))
            .with_operation("control.parse"))
        }
        None => ControlEvent::Run(properties_of(obj)?),
    };
    Ok(ControlCommand {
        target: None,
        event,
    })
}

/// The properties of a `run` event: its `properties` object, else (a bare map) the map itself.
fn properties_of(obj: &Map<String, Value>) -> Result<Map<String, Value>> {
    match obj.get("properties") {
        Some(Value::Object(p)) => Ok(p.clone()),
        Some(Value::Null) => Ok(Map::new()),
        Some(other) if obj.contains_key("event_type") => Err(Error::invalid_input(format!(
            "`properties` of a control event must be an object, got {}",
            crate::types::type_of(other)
        ))
        .with_operation("control.parse")),
        _ => {
            let mut p = obj.clone();
            p.remove("event_type");
            Ok(p)
        }
    }
}

/// A message on a controlled node's control queue.
#[derive(Debug)]
pub(crate) enum ControlMsg {
    Run {
        properties: Map<String, Value>,
        /// Resolved with the outputs of this run (a tool call waiting for its result).
        reply: Option<oneshot::Sender<Result<Map<String, Value>>>>,
    },
    Stop,
    /// One controller has finished.
    End,
}

/// The control queues of one job: who controls whom, and how to reach each target.
#[derive(Debug, Default)]
pub(crate) struct ControlPlane {
    senders: HashMap<String, mpsc::UnboundedSender<ControlMsg>>,
    /// Target → its controllers.
    controllers: HashMap<String, BTreeSet<String>>,
    /// Controller → `{target id: description}` (NodeTool's `_control_context`).
    context: HashMap<String, Map<String, Value>>,
}

/// One control edge's sending end, held by the controller's emitter.
#[derive(Debug)]
pub(crate) struct ControlRoute {
    /// The controller's output handle the edge starts at.
    pub slot: String,
    pub target: String,
    pub edge_id: String,
    pub tx: mpsc::UnboundedSender<ControlMsg>,
}

/// A controlled node's receiving end.
#[derive(Debug)]
pub(crate) struct ControlInbox {
    pub rx: mpsc::UnboundedReceiver<ControlMsg>,
    /// Distinct controllers; the loop ends when each has sent `End`.
    pub controllers: usize,
}

impl ControlPlane {
    /// Queues, routes (by controller) and inboxes (by target) for the control edges of `graph`.
    pub fn build(
        graph: &Graph,
        registry: &Registry,
    ) -> (
        Self,
        HashMap<String, Vec<ControlRoute>>,
        HashMap<String, ControlInbox>,
    ) {
        let mut plane = ControlPlane::default();
        let mut receivers = HashMap::new();
        let mut routes: HashMap<String, Vec<ControlRoute>> = HashMap::new();
        for edge in graph
            .edges
            .iter()
            .filter(|e| e.edge_type == EdgeType::Control)
        {
            let tx = plane
                .senders
                .entry(edge.target.clone())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    receivers.insert(edge.target.clone(), rx);
                    tx
                })
                .clone();
            plane
                .controllers
                .entry(edge.target.clone())
                .or_default()
                .insert(edge.source.clone());
            routes
                .entry(edge.source.clone())
                .or_default()
                .push(ControlRoute {
                    slot: edge.source_handle.clone(),
                    target: edge.target.clone(),
                    edge_id: edge.display_id(),
                    tx,
                });
            if let Some(target) = graph.node(&edge.target) {
                plane
                    .context
                    .entry(edge.source.clone())
                    .or_default()
                    .insert(target.id.clone(), describe_target(target, registry));
            }
        }
        let inboxes = receivers
            .into_iter()
            .map(|(target, rx)| {
                let controllers = plane.controllers.get(&target).map_or(0, BTreeSet::len);
                (target, ControlInbox { rx, controllers })
            })
            .collect();
        (plane, routes, inboxes)
    }

    /// Sends a `run` to `target` on behalf of `controller` and returns the channel its outputs
    /// come back on. Refused unless a control edge joins the two.
    pub fn run(
        &self,
        controller: &str,
        target: &str,
        properties: Map<String, Value>,
    ) -> Result<oneshot::Receiver<Result<Map<String, Value>>>> {
        let controls = self
            .controllers
            .get(target)
            .is_some_and(|c| c.contains(controller));
        let tx = self
            .senders
            .get(target)
            .filter(|_| controls)
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "node `{controller}` has no control edge to node `{target}`"
                ))
                .with_operation("control.run")
                .with_context("target", target)
            })?;
        let (reply, rx) = oneshot::channel();
        tx.send(ControlMsg::Run {
            properties,
            reply: Some(reply),
        })
        .map_err(|_| {
            Error::invalid_input(format!(
                "node `{target}` no longer takes control events (it has finished)"
            ))
            .with_operation("control.run")
        })?;
        Ok(rx)
    }

    /// NodeTool's `_control_context` of a controller: `{target id: {node_id, node_type,
    /// node_title, properties: {name: {value, type, default}}}}`; empty for other nodes.
    pub fn context_of(&self, controller: &str) -> Map<String, Value> {
        self.context.get(controller).cloned().unwrap_or_default()
    }
}

/// What a controller is told about one target: its type and each declared property with the
/// value the graph gives it.
fn describe_target(node: &crate::graph::Node, registry: &Registry) -> Value {
    let mut properties = BTreeMap::new();
    // The title the user gave the node in the editor names it best (agents make tool names
    // of it); else the type's own title.
    let ui_title = node
        .ui_properties
        .as_ref()
        .and_then(|u| u.get("title"))
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .map(str::to_owned);
    let mut title = node.node_type.clone();
    if let Some(imp) = registry.get(&node.node_type) {
        let spec = imp.spec();
        title = spec.title.clone();
        for input in &spec.inputs {
            let value = node
                .data
                .get(&input.name)
                .or_else(|| node.dynamic_properties.get(&input.name))
                .cloned()
                .unwrap_or_else(|| input.default.clone());
            properties.insert(
                input.name.clone(),
                json!({"value": value, "type": input.type_name, "default": input.default}),
            );
        }
    }
    json!({
        "node_id": node.id,
        "node_type": node.node_type,
        "node_title": ui_title.unwrap_or(title),
        "properties": properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_controller_shape() {
        let run = |v: Value| parse_control_value(&v).unwrap();
        assert_eq!(
            run(json!({"event_type": "run", "properties": {"a": 1}})).event,
            ControlEvent::Run(json!({"a": 1}).as_object().unwrap().clone())
        );
        assert_eq!(
            run(json!({"threshold": 0.8})).event,
            ControlEvent::Run(json!({"threshold": 0.8}).as_object().unwrap().clone())
        );
        assert_eq!(
            run(json!({"properties": {"q": "x"}})).event,
            ControlEvent::Run(json!({"q": "x"}).as_object().unwrap().clone())
        );
        assert_eq!(run(json!({"event_type": "stop"})).event, ControlEvent::Stop);
        assert_eq!(
            run(json!({"event_type": "run"})).event,
            ControlEvent::Run(Map::new())
        );
        let targeted = run(json!({"target_node_id": "n2", "event": {"event_type": "run"}}));
        assert_eq!(targeted.target.as_deref(), Some("n2"));
        for bad in [
            json!("run"),
            json!([1]),
            json!({"event_type": "pause"}),
            json!({"event_type": "run", "properties": [1]}),
            json!({"target_node_id": 3, "event": {}}),
        ] {
            assert!(parse_control_value(&bad).is_err(), "{bad}");
        }
    }
}
