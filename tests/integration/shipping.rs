//! Addresses, shipping methods and tax through the embedding API: what checkout charges
//! (as data: shipping by rate, tax per line rounded half up, after discounts), the
//! refusals, the address book's defaults, a return's refund with its tax, and a restart.

use std::sync::Arc;

use emporium_engine::*;
use emporium_tests::*;

/// A shop selling A at 10.00 (400 g) and B at 3.33 (100 g), taxed 7.25 % in US-CA and
/// 5 % elsewhere in the US (nothing in DE), with four methods: flat 4.99, free over
/// 50.00 else 5.99, by weight (≤ 500 g 3.00, ≤ 2 kg 7.00), and US-only flat 9.99.
struct Shop {
    te: TestEngine,
    customer: CustomerId,
    flat: String,
    free_over: String,
    weight: String,
    us_only: String,
}

fn method(te: &TestEngine, name: &str, rate: ShippingRate, countries: &[&str]) -> String {
    let countries = countries.iter().map(|c| c.to_string()).collect();
    let create =
        CreateShippingMethod { name: name.into(), currency: "USD".into(), rate, countries };
    te.shop.send(create).unwrap().id.to_string()
}

fn shop() -> Shop {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "A", 1000, 100);
    stocked_sku(&te.shop, "B", 333, 100);
    te.shop.send(SetSkuWeight { sku: "A".into(), grams: 400 }).unwrap();
    te.shop.send(SetSkuWeight { sku: "B".into(), grams: 100 }).unwrap();
    for (zone, rate_bp) in [("US-CA", 725), ("US", 500)] {
        te.shop.send(SetTaxRate { zone: zone.into(), rate_bp: Some(rate_bp) }).unwrap();
    }
    let flat = method(&te, "Standard", ShippingRate::Flat { amount: 499 }, &[]);
    let free_over =
        method(&te, "Saver", ShippingRate::FreeOver { amount: 599, threshold: 5000 }, &[]);
    let bands = vec![
        WeightBand { up_to_grams: 500, amount: 300 },
        WeightBand { up_to_grams: 2000, amount: 700 },
    ];
    let weight = method(&te, "Parcel", ShippingRate::ByWeight { bands }, &[]);
    let us_only = method(&te, "Domestic", ShippingRate::Flat { amount: 999 }, &["US"]);
    let customer = te
        .shop
        .send(RegisterCustomer {
            email: "ann@example.com".into(),
            name: "Ann".into(),
            role: Role::Customer,
            credential: "hash".into(),
        })
        .unwrap()
        .id;
    te.shop
        .send(CreateDiscountCode {
            code: "TEN".into(),
            percent_off: Some(10),
            ..Default::default()
        })
        .unwrap();
    Shop { te, customer, flat, free_over, weight, us_only }
}

fn address(country: &str, region: &str) -> Address {
    Address {
        name: "Ann".into(),
        line1: "1 Main St".into(),
        line2: String::new(),
        city: "Springfield".into(),
        region: region.into(),
        postal_code: "12345".into(),
        country: country.into(),
    }
}

impl Shop {
    /// A cart of A×`a` and B×`b`, the customer's when `signed_in`, with code TEN when
    /// `code`.
    fn cart(&self, a: i64, b: i64, signed_in: bool, code: bool) -> Arc<Cart> {
        let customer_id = signed_in.then(|| self.customer.to_string());
        let cart = self.te.shop.send(CreateCart { customer_id, currency: None }).unwrap();
        for (sku, quantity) in [("A", a), ("B", b)].into_iter().filter(|(_, q)| *q > 0) {
            let add = AddCartItem { cart_id: cart.id.to_string(), sku: sku.into(), quantity };
            self.te.shop.send(add).unwrap();
        }
        if code {
            let apply = ApplyDiscountCode { cart_id: cart.id.to_string(), code: "TEN".into() };
            self.te.shop.send(apply).unwrap();
        }
        cart
    }

    fn checkout(
        &self,
        cart: &Cart,
        address: Option<Address>,
        method: Option<&str>,
    ) -> Result<Arc<Order>> {
        self.te.shop.send(Checkout {
            cart_id: cart.id.to_string(),
            email: cart.customer_id.is_none().then(|| "guest@example.com".into()),
            shipping_address: address,
            shipping_method_id: method.map(str::to_string),
            ..Default::default()
        })
    }

    /// `shipping tax(line taxes) total`, or the refusal.
    fn charged(
        &self,
        cart: (i64, i64, bool),
        address: Option<Address>,
        method: Option<&str>,
    ) -> String {
        let cart = self.cart(cart.0, cart.1, false, cart.2);
        match self.checkout(&cart, address, method) {
            Err(e) => error_code(&e),
            Ok(order) => {
                let charges = self.te.state().order_charges(&order.id);
                let (shipping, taxes) =
                    charges.as_ref().map_or((0, vec![]), |c| (c.shipping, c.line_taxes.clone()));
                let tax: i64 = taxes.iter().sum();
                assert_eq!(
                    order.total.amount(),
                    order.subtotal.amount() - order.discount_total.amount() + shipping + tax,
                    "total = subtotal − discount + shipping + tax"
                );
                format!("{shipping} {tax}{taxes:?} {}", order.total.amount())
            }
        }
    }
}

#[test]
fn checkout_charges_shipping_and_tax_as_documented() {
    let s = shop();
    let ca = || Some(address("US", "CA"));
    let cases: Vec<(&str, String)> = vec![
        // 20.00 + 9.99; CA tax: 2000 × 7.25 % = 145, 999 × 7.25 % = 72.43 → 72.
        ("flat to CA", s.charged((2, 3, false), ca(), Some(&s.flat))),
        // 1000 × 7.25 % = 72.5 rounds half up to 73.
        ("half up", s.charged((1, 0, false), ca(), Some(&s.flat))),
        // NY has no rate of its own: the country's 5 %: 100 + 49.95 → 50.
        ("country rate", s.charged((2, 3, false), Some(address("US", "NY")), Some(&s.flat))),
        // A region is matched in capitals.
        ("lower-case region", s.charged((1, 0, false), Some(address("US", "ca")), None)),
        // DE: no tax; 29.99 < 50.00, so 5.99.
        ("free over, under", s.charged((2, 3, false), Some(address("DE", "")), Some(&s.free_over))),
        ("free over, at", s.charged((5, 0, false), Some(address("DE", "")), Some(&s.free_over))),
        // 10 % off: A's line 20.00 − 1.99 = 18.01, B's 9.99 − 1.00 = 8.99; taxed after.
        ("after discount", s.charged((2, 3, true), ca(), Some(&s.flat))),
        // The threshold is after discounts: 50.00 − 5.00 = 45.00 < 50.00.
        (
            "free over, discounted",
            s.charged((5, 0, true), Some(address("DE", "")), Some(&s.free_over)),
        ),
        // 2 × 400 + 3 × 100 = 1100 g → the 2 kg band; 1 × 100 g → the first.
        ("by weight", s.charged((2, 3, false), Some(address("DE", "")), Some(&s.weight))),
        ("light", s.charged((0, 1, false), Some(address("DE", "")), Some(&s.weight))),
        ("too heavy", s.charged((5, 1, false), Some(address("DE", "")), Some(&s.weight))),
        ("not to DE", s.charged((1, 0, false), Some(address("DE", "")), Some(&s.us_only))),
        ("to the US", s.charged((1, 0, false), Some(address("US", "TX")), Some(&s.us_only))),
        ("no address", s.charged((1, 0, false), None, Some(&s.flat))),
        ("unknown method", s.charged((1, 0, false), ca(), Some("ship_zz"))),
        // Without a method or a rate, nothing beside the lines.
        ("no charges", s.charged((1, 0, false), Some(address("DE", "")), None)),
        ("no address, no method", s.charged((1, 0, false), None, None)),
    ];
    let expected = [
        ("flat to CA", "499 217[145, 72] 3715"),
        ("half up", "499 73[73] 1572"),
        ("country rate", "499 150[100, 50] 3648"),
        ("lower-case region", "0 73[73] 1073"),
        ("free over, under", "599 0[0, 0] 3598"),
        ("free over, at", "0 0[0] 5000"),
        ("after discount", "499 196[131, 65] 3395"),
        ("free over, discounted", "599 0[0] 5099"),
        ("by weight", "700 0[0, 0] 3699"),
        ("light", "300 0[0] 633"),
        ("too heavy", "validation_failed: shipping_method_id"),
        ("not to DE", "validation_failed: shipping_method_id"),
        ("to the US", "999 50[50] 2049"),
        ("no address", "validation_failed: shipping_method_id"),
        ("unknown method", "validation_failed: shipping_method_id"),
        ("no charges", "0 0[] 1000"),
        ("no address, no method", "0 0[] 1000"),
    ];
    let got: Vec<(&str, &str)> = cases.iter().map(|(n, r)| (*n, r.as_str())).collect();
    assert_eq!(got, expected);
    // A refused checkout reserved nothing.
    check_invariants(s.te.state());
}

#[test]
fn a_switched_off_method_is_refused_and_rates_are_checked() {
    let s = shop();
    let off = UpdateShippingMethod { method_id: s.flat.clone(), active: Some(false), name: None };
    assert!(!s.te.shop.send(off).unwrap().active);
    assert_eq!(
        s.charged((1, 0, false), Some(address("US", "CA")), Some(&s.flat)),
        "validation_failed: shipping_method_id"
    );
    let bad = |rate| {
        let create = CreateShippingMethod {
            name: "Bad".into(),
            currency: "USD".into(),
            rate,
            countries: vec!["usa".into()],
        };
        outcome(&s.te.shop.send(create))
    };
    assert_eq!(
        bad(ShippingRate::Flat { amount: -1 }),
        "validation_failed: rate.amount, countries[0]"
    );
    let bands = vec![
        WeightBand { up_to_grams: 500, amount: 1 },
        WeightBand { up_to_grams: 500, amount: 2 },
    ];
    assert_eq!(
        bad(ShippingRate::ByWeight { bands }),
        "validation_failed: rate.bands[1].up_to_grams, countries[0]"
    );
    assert_eq!(
        bad(ShippingRate::ByWeight { bands: vec![] }),
        "validation_failed: rate.bands, countries[0]"
    );
    let tax =
        |zone: &str, rate_bp| outcome(&s.te.shop.send(SetTaxRate { zone: zone.into(), rate_bp }));
    assert_eq!(tax("us-ca", Some(5)), "validation_failed: zone");
    assert_eq!(tax("US-CALI", Some(5)), "validation_failed: zone");
    assert_eq!(tax("FR", Some(10_001)), "validation_failed: rate_bp");
    assert_eq!(tax("FR", None), "not_found: tax rate");
    assert_eq!(tax("US-CA", None), "ok");
    assert_eq!(
        s.charged((1, 0, false), Some(address("US", "CA")), None),
        "0 50[50] 1050",
        "without its region's rate, the country's applies"
    );
    let weight = s.te.shop.send(SetSkuWeight { sku: "NOPE".into(), grams: 1 });
    assert_eq!(outcome(&weight), "not_found: SKU");
}

#[test]
fn the_address_book_keeps_one_default_and_checkout_uses_it() {
    let s = shop();
    let save = |address_id: Option<String>, country: &str, default_shipping: bool| {
        s.te.shop.send(SaveAddress {
            customer_id: s.customer,
            address_id,
            address: address(country, ""),
            default_shipping,
            default_billing: false,
        })
    };
    let home = save(None, "US", true).unwrap();
    let work = save(None, "DE", false).unwrap();
    let defaults = |s: &Shop| -> Vec<(String, bool)> {
        s.te.state()
            .saved_addresses(&s.customer)
            .iter()
            .map(|a| (a.address.country.clone(), a.default_shipping))
            .collect()
    };
    assert_eq!(defaults(&s), [("US".into(), true), ("DE".into(), false)]);
    // The default moves.
    save(Some(work.id.to_string()), "DE", true).unwrap();
    assert_eq!(defaults(&s), [("US".into(), false), ("DE".into(), true)]);

    // No address given: the default; an id of the book; someone else's id is refused.
    let cart = s.cart(1, 0, true, false);
    let order = s.checkout(&cart, None, Some(&s.free_over)).unwrap();
    assert_eq!(order.shipping_address.as_ref().map(|a| a.country.as_str()), Some("DE"));
    let cart = s.cart(1, 0, true, false);
    let by_id = s.te.shop.send(Checkout {
        cart_id: cart.id.to_string(),
        shipping_address_id: Some(home.id.to_string()),
        ..Default::default()
    });
    assert_eq!(by_id.unwrap().shipping_address.as_ref().unwrap().country, "US");
    let guest = s.cart(1, 0, false, false);
    let stolen = s.te.shop.send(Checkout {
        cart_id: guest.id.to_string(),
        email: Some("guest@example.com".into()),
        shipping_address_id: Some(home.id.to_string()),
        ..Default::default()
    });
    assert_eq!(outcome(&stolen), "validation_failed: shipping_address_id");
    let bob =
        s.te.shop
            .send(RegisterCustomer {
                email: "bob@example.com".into(),
                name: "Bob".into(),
                role: Role::Customer,
                credential: "hash".into(),
            })
            .unwrap();
    let bobs = s.te.shop.send(CreateCart { customer_id: Some(bob.id.to_string()), currency: None });
    let bobs = bobs.unwrap();
    let add = AddCartItem { cart_id: bobs.id.to_string(), sku: "A".into(), quantity: 1 };
    s.te.shop.send(add).unwrap();
    let anns_address = s.te.shop.send(Checkout {
        cart_id: bobs.id.to_string(),
        shipping_address_id: Some(home.id.to_string()),
        ..Default::default()
    });
    assert_eq!(outcome(&anns_address), "validation_failed: shipping_address_id", "not Bob's");
    let bad = SaveAddress {
        customer_id: bob.id,
        address_id: Some(home.id.to_string()),
        address: address("US", ""),
        default_shipping: false,
        default_billing: false,
    };
    assert_eq!(outcome(&s.te.shop.send(bad)), "not_found: address", "nor his to change");
    let mut nameless = address("us", "");
    nameless.name = String::new();
    let invalid = SaveAddress {
        customer_id: bob.id,
        address_id: None,
        address: nameless,
        default_shipping: false,
        default_billing: false,
    };
    assert_eq!(
        outcome(&s.te.shop.send(invalid)),
        "validation_failed: address.name, address.country"
    );
    let both = s.te.shop.send(Checkout {
        cart_id: s.cart(1, 0, true, false).id.to_string(),
        shipping_address: Some(address("US", "")),
        shipping_address_id: Some(home.id.to_string()),
        ..Default::default()
    });
    assert_eq!(outcome(&both), "validation_failed: shipping_address_id");

    // Bounded, and deletable.
    for _ in 2..ADDRESSES_PER_CUSTOMER_MAX {
        save(None, "FR", false).unwrap();
    }
    assert_eq!(outcome(&save(None, "FR", false)), "invalid_state");
    let delete = DeleteAddress { customer_id: s.customer, address_id: home.id.to_string() };
    s.te.shop.send(delete.clone()).unwrap();
    assert_eq!(outcome(&s.te.shop.send(delete)), "not_found: address");
    assert_eq!(s.te.state().saved_addresses(&s.customer).len(), ADDRESSES_PER_CUSTOMER_MAX - 1);
    check_invariants(s.te.state());
}

#[test]
fn a_return_refunds_the_tax_paid_and_charges_survive_a_restart() {
    let s = shop();
    let cart = s.cart(2, 0, false, false);
    let order = s.checkout(&cart, Some(address("US", "CA")), Some(&s.flat)).unwrap();
    // 2000 + 145 tax + 499 shipping.
    assert_eq!(order.total.amount(), 2644);
    pay(&s.te.shop, &order.id).unwrap();
    s.te.shop.send(FulfillOrder { order_id: order.id.to_string() }).unwrap();
    let asked =
        s.te.shop
            .send(RequestReturn {
                order_id: order.id.to_string(),
                lines: vec![("A".into(), 1)],
                reason: "too big".into(),
            })
            .unwrap();
    // Half of what the line was paid, tax included: (2000 + 145) / 2 = 1072.
    assert_eq!(asked.r#return.amount(), 1072);
    let customer = s.customer;
    for country in ["US", "DE", "FR"] {
        let save = SaveAddress {
            customer_id: customer,
            address_id: None,
            address: address(country, ""),
            default_shipping: country == "DE",
            default_billing: false,
        };
        s.te.clock.advance(1);
        s.te.shop.send(save).unwrap();
    }
    let te = s.te.reopen();
    let book: Vec<(String, bool)> = te
        .state()
        .saved_addresses(&customer)
        .iter()
        .map(|a| (a.address.country.clone(), a.default_shipping))
        .collect();
    let expected = [("US".to_string(), false), ("DE".into(), true), ("FR".into(), false)];
    assert_eq!(book, expected, "oldest first, the default kept");
    let next = CreateShippingMethod {
        name: "Next".into(),
        currency: "USD".into(),
        rate: ShippingRate::Flat { amount: 1 },
        countries: vec![],
    };
    let next = te.shop.send(next).unwrap();
    assert_eq!(next.id, ShippingMethodId::from_seq(5), "the id counter survived");
    let charges = te.state().order_charges(&order.id).expect("kept");
    assert_eq!((charges.shipping, charges.tax(), charges.tax_zone.as_str()), (499, 145, "US-CA"));
    assert_eq!(te.state().order(&order.id).unwrap().total.amount(), 2644);
    assert_eq!(te.state().shipping_methods().len(), 5);
    assert_eq!(te.state().tax_rates().len(), 2);
    assert_eq!(te.state().sku_weight(&Sku::new("A").unwrap()), Some(400));
    check_invariants(te.state());
}
