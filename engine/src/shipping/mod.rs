//! Shipping: customers' address books, shipping methods and their rates, tax rates by
//! zone, parcel weights, and what each order was charged for shipping and tax.
//!
//! Prices exclude tax. At checkout, with a shipping address, each line is taxed at the
//! rate of the address's zone — its region's (`US-CA`) if one is set, else its
//! country's (`US`) — on what the line costs after its discount, rounded half up to the
//! minor unit per line; the order's tax is the sum of its lines'. Shipping is not taxed.
//! A chosen shipping method adds its rate: flat, free once the subtotal after discounts
//! reaches a threshold, or by the parcel's weight (a SKU without a weight weighs
//! nothing). The order's total is subtotal − discounts + shipping + tax.

mod commands;
mod model;

use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::domains::State;
use crate::error::{EngineError, Result};
use crate::kernel::table::{
    check_v1, decode_row, persist, Counter, Domain, IdIndex, Index, Row, StaffKeyIndex, Table,
};
use crate::orders::{Address, PlacedLine};
use crate::types::*;

const ADDRESSES: &str = "addresses";
const SHIPPING_METHODS: &str = "shipping_methods";
const TAX_RATES: &str = "tax_rates";
const SKU_WEIGHTS: &str = "sku_weights";
const ORDER_CHARGES: &str = "order_charges";

persist!(SavedAddress, ADDRESSES, |a| a.id.text().as_str().as_bytes().to_vec());
persist!(ShippingMethod, SHIPPING_METHODS, |m| m.id.seq().to_be_bytes().to_vec());
persist!(TaxRate, TAX_RATES, |t| t.zone.as_bytes().to_vec());
persist!(SkuWeight, SKU_WEIGHTS, |w| w.sku.as_str().as_bytes().to_vec());
persist!(OrderCharges, ORDER_CHARGES, |c| c.order_id.text().as_str().as_bytes().to_vec());

/// The shipping domain in memory.
#[derive(Debug)]
pub(crate) struct Tables {
    addresses: IdIndex<AddressId, Arc<SavedAddress>>,
    /// Each customer's addresses, oldest first.
    by_customer: IdIndex<CustomerId, Arc<Vec<AddressId>>>,
    methods: IdIndex<ShippingMethodId, Arc<ShippingMethod>>,
    tax_rates: Index<String, Arc<TaxRate>>,
    weights: StaffKeyIndex<Sku, u32>,
    /// The charges of the orders in memory: those of an order that leaves memory go
    /// with it ([`order_left_memory`]) and are read from the store when asked for.
    order_charges: IdIndex<OrderId, Arc<OrderCharges>>,
    method_seq: Counter,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            addresses: IdIndex::default(),
            by_customer: IdIndex::default(),
            methods: IdIndex::default(),
            tax_rates: Index::default(),
            weights: Index::default(),
            order_charges: IdIndex::default(),
            method_seq: Counter::new("shipping_method"),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "shipping",
    tables: &[
        Table {
            name: ADDRESSES,
            rows: |s, f| s.shipping.addresses.entries().iter().for_each(|(_, a)| f(&**a)),
            load: |state, bytes| {
                let address: SavedAddress = decode_row(bytes, "address")?;
                index_address(state, Arc::new(address));
                Ok(())
            },
            check_v1: check_v1::<SavedAddress>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: SHIPPING_METHODS,
            rows: |s, f| s.shipping.methods.entries().iter().for_each(|(_, m)| f(&**m)),
            load: |state, bytes| {
                let method: ShippingMethod = decode_row(bytes, "shipping method")?;
                state.shipping.methods.insert(method.id, Arc::new(method));
                Ok(())
            },
            check_v1: check_v1::<ShippingMethod>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: TAX_RATES,
            rows: |s, f| s.shipping.tax_rates.entries().iter().for_each(|(_, t)| f(&**t)),
            load: |state, bytes| {
                let rate: TaxRate = decode_row(bytes, "tax rate")?;
                state.shipping.tax_rates.insert(rate.zone.clone(), Arc::new(rate));
                Ok(())
            },
            check_v1: check_v1::<TaxRate>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: SKU_WEIGHTS,
            rows: |s, f| {
                s.shipping
                    .weights
                    .entries()
                    .into_iter()
                    .for_each(|(sku, grams)| f(&SkuWeight { sku, grams }))
            },
            load: |state, bytes| {
                let weight: SkuWeight = decode_row(bytes, "SKU weight")?;
                state.shipping.weights.insert(weight.sku, weight.grams);
                Ok(())
            },
            check_v1: check_v1::<SkuWeight>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: ORDER_CHARGES,
            rows: |s, f| {
                s.for_each_order(|order| {
                    if let Some(charges) = s.order_charges(&order.id) {
                        f(&*charges)
                    }
                })
            },
            load: |state, bytes| {
                let charges: OrderCharges = decode_row(bytes, "order charges")?;
                // Orders load first (an earlier domain): the charges of one the open
                // left in the store stay there too.
                if state.orders.orders.contains_key(&charges.order_id) {
                    state.shipping.order_charges.insert(charges.order_id, Arc::new(charges));
                }
                Ok(())
            },
            check_v1: check_v1::<OrderCharges>,
            load_in_parallel: true,
            skip_list: false,
            reserve: None,
        },
    ],
    counters: |state, each| {
        each(&state.shipping.method_seq);
    },
    timers: None,
    verify: None,
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// The shipping domain's facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum ShippingEvent {
        /// An address was saved (new, or changed); its default flags move to it.
        AddressSaved(Box<SavedAddress>),
        AddressDeleted {
            customer_id: CustomerId,
            address_id: AddressId,
        },
        /// A shipping method was created or changed.
        MethodSaved(Box<ShippingMethod>),
        TaxRateSet(Box<TaxRate>),
        TaxRateRemoved {
            zone: String,
        },
        WeightSet(Box<SkuWeight>),
        /// Part of placing an order: its shipping and tax, added to its total.
        OrderCharged(Box<OrderCharges>),
    }
}
pub use event::ShippingEvent;

pub(crate) fn apply(state: &State, event: &ShippingEvent, at: TimestampMs, rows: &mut Vec<Row>) {
    let tables = &state.shipping;
    match event {
        ShippingEvent::AddressSaved(saved) => {
            let saved = (**saved).clone();
            // A default moves: the customer's other address loses the flag.
            for other in state.saved_addresses(&saved.customer_id) {
                let shipping = saved.default_shipping && other.default_shipping;
                let billing = saved.default_billing && other.default_billing;
                if other.id != saved.id && (shipping || billing) {
                    let mut other = (*other).clone();
                    other.default_shipping &= !shipping;
                    other.default_billing &= !billing;
                    other.updated_at = at;
                    put_address(state, other, rows);
                }
            }
            put_address(state, saved, rows);
        }
        ShippingEvent::AddressDeleted { customer_id, address_id } => {
            tables.addresses.remove(address_id);
            let list = tables.by_customer.get(customer_id).unwrap_or_default();
            let list: Vec<AddressId> = list.iter().copied().filter(|id| id != address_id).collect();
            tables.by_customer.insert(*customer_id, Arc::new(list));
            rows.push(Row::delete(ADDRESSES, address_id.text().as_str().as_bytes().to_vec()));
        }
        ShippingEvent::MethodSaved(method) => {
            if !tables.methods.contains_key(&method.id) {
                tables.method_seq.bump();
            }
            let method = Arc::new((**method).clone());
            tables.methods.insert(method.id, method.clone());
            rows.push(Row::put(method));
        }
        ShippingEvent::TaxRateSet(rate) => {
            let rate = Arc::new((**rate).clone());
            tables.tax_rates.insert(rate.zone.clone(), rate.clone());
            rows.push(Row::put(rate));
        }
        ShippingEvent::TaxRateRemoved { zone } => {
            tables.tax_rates.remove(zone);
            rows.push(Row::delete(TAX_RATES, zone.as_bytes().to_vec()));
        }
        ShippingEvent::WeightSet(weight) => {
            tables.weights.insert(weight.sku.clone(), weight.grams);
            rows.push(Row::put(Arc::new((**weight).clone())));
        }
        ShippingEvent::OrderCharged(charges) => {
            let mut order = (*state.order(&charges.order_id).expect("placed just before")).clone();
            let currency = order.currency();
            // Part of placing the order: its version stays 1, so a keyed checkout's
            // replay (the order as placed) shows the charges too.
            let total = order.total.amount() + charges.shipping + charges.tax();
            order.total = Money::new(total, currency).expect("decide bounded the total");
            crate::orders::put_order(state, order, rows);
            let charges = Arc::new((**charges).clone());
            tables.order_charges.insert(charges.order_id, charges.clone());
            rows.push(Row::put(charges));
        }
    }
}

fn index_address(state: &State, address: Arc<SavedAddress>) {
    let tables = &state.shipping;
    if !tables.addresses.contains_key(&address.id) {
        let mut list =
            tables.by_customer.get(&address.customer_id).map_or_else(Vec::new, |l| (*l).clone());
        list.push(address.id);
        list.sort_by_key(|id| {
            if *id == address.id {
                (address.created_at, *id)
            } else {
                (tables.addresses.get(id).map_or(0, |a| a.created_at), *id)
            }
        });
        tables.by_customer.insert(address.customer_id, Arc::new(list));
    }
    tables.addresses.insert(address.id, address);
}

fn put_address(state: &State, address: SavedAddress, rows: &mut Vec<Row>) {
    let address = Arc::new(address);
    index_address(state, address.clone());
    rows.push(Row::put(address));
}

/// What shipping `method` costs for a parcel of `grams` whose lines cost `subtotal`
/// after discounts; `None` when the parcel is too heavy for it.
pub fn quote(method: &ShippingMethod, subtotal: i64, grams: u64) -> Option<i64> {
    match &method.rate {
        ShippingRate::Flat { amount } => Some(*amount),
        ShippingRate::FreeOver { amount, threshold } => {
            Some(if subtotal >= *threshold { 0 } else { *amount })
        }
        ShippingRate::ByWeight { bands } => {
            bands.iter().find(|b| u64::from(b.up_to_grams) >= grams).map(|b| b.amount)
        }
    }
}

/// One line's tax at `rate_bp` on `net` minor units: rounded half up.
pub fn line_tax(net: i64, rate_bp: u32) -> i64 {
    ((i128::from(net.max(0)) * i128::from(rate_bp) + 5_000) / 10_000) as i64
}

/// What an order placed now is charged beside its lines (`None`: nothing), or why it
/// cannot be placed so: the shipping method (by id text) must exist, be active, be in
/// the order's currency and ship to the address's country, and the parcel must fit it.
pub(crate) fn charges(
    state: &State,
    order_id: OrderId,
    currency: Currency,
    address: Option<&Address>,
    method_id: Option<&str>,
    lines: &[PlacedLine],
    line_discounts: &[i64],
) -> Result<Option<OrderCharges>> {
    let nets: Vec<i64> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.unit_price.amount() * i64::from(l.quantity)
                - line_discounts.get(i).copied().unwrap_or(0)
        })
        .collect();
    let method = match method_id {
        None => None,
        Some(id) => {
            let field = "shipping_method_id";
            let method = ShippingMethodId::parse(id)
                .and_then(|id| state.shipping_method(&id))
                .filter(|m| m.active)
                .ok_or_else(|| EngineError::field(field, "no such active shipping method"))?;
            let Some(address) = address else {
                return Err(EngineError::field(
                    field,
                    "a shipping method needs a shipping address",
                ));
            };
            if method.currency != currency {
                return Err(EngineError::field(
                    field,
                    format!("the method charges in {}, the cart is in {currency}", method.currency),
                ));
            }
            if !method.countries.is_empty() && !method.countries.contains(&address.country) {
                return Err(EngineError::field(
                    field,
                    format!("the method does not ship to {}", address.country),
                ));
            }
            let grams: u64 = lines
                .iter()
                .map(|l| u64::from(state.sku_weight(&l.sku).unwrap_or(0)) * u64::from(l.quantity))
                .sum();
            let subtotal: i64 = nets.iter().sum();
            let amount = quote(&method, subtotal, grams).ok_or_else(|| {
                EngineError::field(field, format!("the parcel ({grams} g) is too heavy for it"))
            })?;
            Some((method, amount))
        }
    };
    let rate = address.and_then(|a| state.tax_rate_for(a));
    if method.is_none() && rate.is_none() {
        return Ok(None);
    }
    let rate_bp = rate.as_ref().map_or(0, |r| r.rate_bp);
    Ok(Some(OrderCharges {
        order_id,
        method_id: method.as_ref().map(|(m, _)| m.id),
        method_name: method.as_ref().map_or_else(String::new, |(m, _)| m.name.clone()),
        shipping: method.as_ref().map_or(0, |(_, amount)| *amount),
        tax_zone: rate.as_ref().map_or_else(String::new, |r| r.zone.clone()),
        tax_rate_bp: rate_bp,
        line_taxes: nets.iter().map(|&net| line_tax(net, rate_bp)).collect(),
    }))
}

/// The shipping domain's reads.
impl State {
    /// A customer's saved addresses, oldest first.
    pub fn saved_addresses(&self, customer_id: &CustomerId) -> Vec<Arc<SavedAddress>> {
        let ids = self.shipping.by_customer.get(customer_id).unwrap_or_default();
        ids.iter().filter_map(|id| self.shipping.addresses.get(id)).collect()
    }

    /// A saved address by id.
    pub fn saved_address(&self, id: &AddressId) -> Option<Arc<SavedAddress>> {
        self.shipping.addresses.get(id)
    }

    /// Every shipping method, in the order they were created.
    pub fn shipping_methods(&self) -> Vec<Arc<ShippingMethod>> {
        let mut methods: Vec<_> =
            self.shipping.methods.entries().into_iter().map(|(_, m)| m).collect();
        methods.sort_by_key(|m| m.id);
        methods
    }

    /// A shipping method by id.
    pub fn shipping_method(&self, id: &ShippingMethodId) -> Option<Arc<ShippingMethod>> {
        self.shipping.methods.get(id)
    }

    /// Every tax rate, by zone.
    pub fn tax_rates(&self) -> Vec<Arc<TaxRate>> {
        let mut rates: Vec<_> =
            self.shipping.tax_rates.entries().into_iter().map(|(_, r)| r).collect();
        rates.sort_by(|a, b| a.zone.cmp(&b.zone));
        rates
    }

    /// The tax rate an address is charged: its region's if set, else its country's.
    pub fn tax_rate_for(&self, address: &Address) -> Option<Arc<TaxRate>> {
        let region = (!address.region.is_empty())
            .then(|| format!("{}-{}", address.country, address.region.to_ascii_uppercase()));
        region
            .and_then(|zone| self.shipping.tax_rates.get(&zone))
            .or_else(|| self.shipping.tax_rates.get(&address.country))
    }

    /// A SKU's weight in grams, if set.
    pub fn sku_weight(&self, sku: &Sku) -> Option<u32> {
        self.shipping.weights.get(sku)
    }

    /// What an order was charged for shipping and tax, if anything (read from the
    /// store for an order out of memory).
    pub fn order_charges(&self, order_id: &OrderId) -> Option<Arc<OrderCharges>> {
        self.shipping.order_charges.get(order_id).or_else(|| {
            self.stored_order_part(order_id, ORDER_CHARGES, |c: &OrderCharges| c.order_id)
        })
    }

    /// How many orders' charges are in memory (those of orders in memory).
    pub fn order_charges_in_memory(&self) -> usize {
        self.shipping.order_charges.len()
    }
}

/// Order `order_id` left memory (its last value is in the store): its charges, which
/// never change after the checkout that wrote them, go too.
pub(crate) fn order_left_memory(state: &State, order_id: &OrderId) {
    state.shipping.order_charges.remove(order_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(rate: ShippingRate) -> ShippingMethod {
        ShippingMethod {
            id: ShippingMethodId::from_seq(1),
            name: "Standard".into(),
            currency: Currency::USD,
            rate,
            countries: vec![],
            active: true,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn rates_quote_as_documented() {
        assert_eq!(quote(&method(ShippingRate::Flat { amount: 499 }), 10, 0), Some(499));
        let free = method(ShippingRate::FreeOver { amount: 599, threshold: 5000 });
        assert_eq!(quote(&free, 4999, 0), Some(599));
        assert_eq!(quote(&free, 5000, 0), Some(0), "at the threshold it is free");
        let bands = vec![
            WeightBand { up_to_grams: 500, amount: 300 },
            WeightBand { up_to_grams: 2000, amount: 700 },
        ];
        let weight = method(ShippingRate::ByWeight { bands });
        assert_eq!(quote(&weight, 0, 0), Some(300));
        assert_eq!(quote(&weight, 0, 500), Some(300), "a band holds its upper weight");
        assert_eq!(quote(&weight, 0, 501), Some(700));
        assert_eq!(quote(&weight, 0, 2001), None, "heavier than the last band");
    }

    #[test]
    fn line_tax_rounds_half_up_per_line() {
        assert_eq!(line_tax(1000, 725), 73, "72.5 rounds up");
        assert_eq!(line_tax(999, 725), 72, "72.4275 rounds down");
        assert_eq!(line_tax(1, 4999), 0);
        assert_eq!(line_tax(1, 5000), 1);
        assert_eq!(line_tax(0, 2000), 0);
        assert_eq!(line_tax(MONEY_AMOUNT_MAX, 10_000), MONEY_AMOUNT_MAX, "no overflow");
    }
}
