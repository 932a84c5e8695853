//! What is read at scrape time rather than recorded: the kernel's verdict counters, whether
//! the filter is attached on each configured interface, the served certificate's expiry.

use std::sync::Arc;

use filter_common::{Counter, CounterValue};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use super::Health;
use crate::filter::{Pins, pinned::PinnedFilter};

/// Reads the kernel's per-CPU verdict counters at scrape time.
#[derive(Debug)]
pub(super) struct XdpCollector {
    pub(super) pins: Pins,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
    reason: &'static str,
}

impl XdpCollector {
    fn read(&self) -> Option<[CounterValue; Counter::COUNT as usize]> {
        PinnedFilter::new(&self.pins).counters().ok()
    }
}

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // No pinned filter (detached): export nothing rather than zeros that look like a filter.
        match self.read() {
            Some(values) => encode_xdp(&mut encoder, &values),
            None => Ok(()),
        }
    }
}

/// Encodes the kernel's verdict counters `values`.
pub(super) fn encode_xdp(
    encoder: &mut DescriptorEncoder,
    values: &[CounterValue; Counter::COUNT as usize],
) -> Result<(), std::fmt::Error> {
    type Pick = fn(&CounterValue) -> u64;
    // `xdp` in bytes is `hookwall_xdp_bytes_total`: the encoder appends the unit.
    let series: [(&str, &str, Option<Unit>, Pick); 2] = [
        (
            "xdp_packets",
            "Packets judged by the XDP filter, by verdict and reason",
            None,
            |v| v.packets,
        ),
        (
            "xdp",
            "Bytes of the packets judged by the XDP filter",
            Some(Unit::Bytes),
            |v| v.bytes,
        ),
    ];
    for (name, help, unit, pick) in series {
        let mut family =
            encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
        for counter in Counter::ALL {
            let labels = VerdictLabels {
                verdict: counter.verdict().as_str(),
                reason: counter.reason().as_str(),
            };
            let metric = ConstCounter::new(pick(&values[counter as usize]));
            metric.encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Labels of `hookwall_filter_attached`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttachedLabels {
    interface: String,
    /// The mode of the link pinned for the interface (`native`, `generic`); without one, the
    /// configured `filter.attach` (`auto`, `native`, `generic`).
    mode: &'static str,
}

/// Reads the attachments and the certificate's expiry at scrape time.
#[derive(Debug)]
pub(super) struct StateCollector {
    pub(super) health: Arc<Health>,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some((attachments, attach)) = self.health.attachments() {
            let mut family = encoder.encode_descriptor(
                "filter_attached",
                "Whether the XDP program is attached on each configured interface now (1) or \
                 not (0), asked of the kernel at each scrape",
                None,
                MetricType::Gauge,
            )?;
            for a in attachments {
                let labels = AttachedLabels {
                    interface: a.interface,
                    mode: a.mode.map_or(attach.as_str(), |m| m.as_str()),
                };
                ConstGauge::new(i64::from(a.attached.is_ok()))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(not_after) = self.health.certificate_not_after() {
            // `..._timestamp` in seconds is `..._timestamp_seconds`.
            let family = encoder.encode_descriptor(
                "tls_certificate_not_after_timestamp",
                "Expiry (notAfter, Unix time) of the HTTPS certificate being served",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(not_after).encode(family)?;
        }
        Ok(())
    }
}
