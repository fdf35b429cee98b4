//! The route table: every endpoint once, with its method, path, handler, rate-limit
//! class, body kind, success status and who may call it. The router and the OpenAPI
//! document are both built from this table, so they cannot drift apart.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use http::Method;

use crate::handlers::{
    accounts, carts, catalog, events, flash_sales, inventory, notifications, ops, orders,
    promotions, recommendations, returns, reviews, search, shipping, stats, webhooks,
};
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::ratelimit::Class;

/// Path parameters by name (the route's own, so not copied), in path order.
pub type Params = Vec<(&'static str, String)>;

/// A handler's future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Out, Problem>> + Send>>;

/// What a request body may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body is read.
    None,
    /// A JSON body is required.
    Json,
    /// An empty body, or JSON.
    OptionalJson,
    /// JSON or a form (the OAuth token endpoint).
    JsonOrForm,
}

/// One endpoint.
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path pattern (`/v1/products/{id}`).
    pub path: &'static str,
    /// The OpenAPI operation id.
    pub operation: &'static str,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// The handler.
    pub handler: fn(Call) -> HandlerFuture,
    /// The rate-limit class.
    pub class: Class,
    /// The body it reads.
    pub body: BodyKind,
    /// The status of a success.
    pub success: u16,
    /// Who may call it, for the document.
    pub access: &'static str,
    /// The OpenAPI schema of the request body, if any.
    pub request_schema: Option<&'static str>,
    /// The OpenAPI schema of the success body, if any.
    pub response_schema: Option<&'static str>,
    /// Error statuses it can answer besides the ones every route can.
    pub errors: &'static [u16],
    /// Whether it takes (`Some(true)`: requires) an `Idempotency-Key`.
    pub idempotency: Option<bool>,
}

macro_rules! route {
    ($method:ident $path:literal, $op:literal, $summary:literal, $handler:path, $class:ident, $body:ident,
     $success:literal, $access:literal, $req:expr, $resp:expr, $errors:expr, $idem:expr) => {
        Route {
            method: Method::$method,
            path: $path,
            operation: $op,
            summary: $summary,
            handler: |call| Box::pin($handler(call)),
            class: Class::$class,
            body: BodyKind::$body,
            success: $success,
            access: $access,
            request_schema: $req,
            response_schema: $resp,
            errors: $errors,
            idempotency: $idem,
        }
    };
}

/// Every endpoint.
pub static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    vec![
        route!(GET "/healthz", "health", "The process is alive", ops::health, Read, None, 200, "anyone", None, Some("Health"), &[], None),
        route!(GET "/readyz", "ready", "Recovered and serving: role, epoch and LSN", ops::ready, Read, None, 200, "anyone", None, Some("Ready"), &[503], None),
        route!(GET "/metrics", "metrics", "Prometheus metrics (text exposition format)", ops::metrics, Read, None, 200, "anyone", None, None, &[], None),
        route!(GET "/openapi.json", "openapi", "This document", ops::openapi, Read, None, 200, "anyone", None, None, &[], None),
        route!(POST "/v1/auth/register", "register", "Register a customer account", accounts::register, Auth, Json, 201, "anyone", Some("Registration"), Some("Session"), &[409, 422], None),
        route!(POST "/v1/auth/token", "token", "OAuth 2.0 token endpoint (password, client_credentials, refresh_token)", accounts::token, Auth, JsonOrForm, 200, "anyone", Some("TokenRequest"), Some("Token"), &[], None),
        route!(GET "/v1/customers/me", "get_me", "The calling account", accounts::me, Read, None, 200, "any signed-in account", None, Some("Customer"), &[401, 403], None),
        route!(GET "/v1/customers/me/orders", "list_my_orders", "The calling account's orders", orders::list_mine, Read, None, 200, "any signed-in account", None, Some("OrderList"), &[401, 403], None),
        route!(GET "/v1/customers/me/addresses", "list_my_addresses", "The calling account's address book, oldest first (at most 20)", shipping::list_addresses, Read, None, 200, "any signed-in account", None, Some("SavedAddressList"), &[401, 403], None),
        route!(POST "/v1/customers/me/addresses", "add_my_address", "Save an address in the calling account's book (default_shipping: checkout ships there when no address is given; a default moves from the book's other address)", shipping::save_address, Write, Json, 201, "any signed-in account", Some("SavedAddressInput"), Some("SavedAddress"), &[401, 403, 409, 422], Some(false)),
        route!(PUT "/v1/customers/me/addresses/{id}", "replace_my_address", "Replace an address of the calling account's book", shipping::save_address, Write, Json, 200, "any signed-in account", Some("SavedAddressInput"), Some("SavedAddress"), &[401, 403, 404, 422], Some(false)),
        route!(DELETE "/v1/customers/me/addresses/{id}", "delete_my_address", "Delete an address of the calling account's book", shipping::delete_address, Write, None, 204, "any signed-in account", None, None, &[401, 403, 404], None),
        route!(POST "/v1/admin/users", "create_user", "Create an account with a role", accounts::create_user, Write, Json, 201, "users:admin", Some("NewUser"), Some("Customer"), &[401, 403, 409, 422], Some(false)),
        route!(POST "/v1/admin/api-clients", "create_api_client", "Create an API client; its secret is shown once", accounts::create_api_client, Write, Json, 201, "users:admin", Some("NewApiClient"), Some("ApiClientCredentials"), &[401, 403, 422], None),
        route!(GET "/v1/products", "list_products", "List products (customers see active ones)", catalog::list_products, Read, None, 200, "anyone", None, Some("ProductList"), &[403], None),
        route!(POST "/v1/products", "create_product", "Create a product", catalog::create_product, Write, Json, 201, "catalog:write", Some("NewProduct"), Some("Product"), &[401, 403, 409, 422], Some(false)),
        route!(GET "/v1/products/{id}", "get_product", "A product", catalog::get_product, Read, None, 200, "anyone (active products); catalog:write for others", None, Some("Product"), &[404], None),
        route!(PATCH "/v1/products/{id}", "update_product", "Change a product", catalog::update_product, Write, Json, 200, "catalog:write", Some("ProductPatch"), Some("Product"), &[401, 403, 404, 409, 412, 422], None),
        route!(POST "/v1/products/{id}/reviews", "submit_review", "Review a product (one review per customer and product: a second one edits the first, 200). Published at once unless premoderation is on or it contains a held word; verified_purchase when the author has a paid order containing the product", reviews::submit, Write, Json, 201, "signed-in customers", Some("NewReview"), Some("Review"), &[401, 403, 404, 422], Some(false)),
        route!(GET "/v1/products/{id}/reviews", "list_product_reviews", "A product's published reviews and its rating", reviews::of_product, Read, None, 200, "anyone (active products); catalog:write for others", None, Some("ProductReviews"), &[400, 404], None),
        route!(GET "/v1/products/{id}/recommendations", "product_recommendations", "Products bought with this one: in the same orders (kind=bought_together, the default; score = orders) or by the same customers (kind=also_bought; score = customers). Folded from paid orders; a pair counts from 2 on; active products in stock only, best first", recommendations::of_product, Read, None, 200, "anyone (active products); catalog:write for others", None, Some("RecommendationList"), &[400, 404], None),
        route!(GET "/v1/customers/me/notification-preferences", "get_my_notification_preferences", "Which messages the calling account is sent: order confirmation, payment received, order shipped, refund issued (all on until switched off)", notifications::preferences, Read, None, 200, "any signed-in account", None, Some("NotificationPreferences"), &[401, 403], None),
        route!(PATCH "/v1/customers/me/notification-preferences", "update_my_notification_preferences", "Switch kinds of message on or off for the calling account (the kinds not named stay as they are); a message is made or skipped by the preference when its event happens", notifications::update_preferences, Write, Json, 200, "any signed-in account", Some("NotificationPreferencesPatch"), Some("NotificationPreferences"), &[401, 403, 404, 422], None),
        route!(GET "/v1/customers/me/recommendations", "my_recommendations", "The calling account's list: products bought together with what it bought (basis bought_together, the counts summed), then trending in the categories it bought from, then trending anywhere (basis trending); never what it bought; active products in stock only", recommendations::mine, Read, None, 200, "any signed-in account", None, Some("RecommendationList"), &[400, 401, 403], None),
        route!(GET "/v1/recommendations/trending", "trending_products", "The products selling most now: units sold, each weighing half as much per day since its order was paid (score = that decayed count); of a category and those under it when category_id is given; active products in stock only", recommendations::trending, Read, None, 200, "anyone", None, Some("RecommendationList"), &[400], None),
        route!(GET "/v1/reviews", "list_reviews", "Reviews by status, oldest first: pending (the default) is the moderation queue", reviews::list, Read, None, 200, "catalog:write", None, Some("ReviewList"), &[400, 401, 403], None),
        route!(GET "/v1/reviews/{id}", "get_review", "A review: published ones to anyone; staff and its author see it whatever its status", reviews::get, Read, None, 200, "anyone", None, Some("Review"), &[404], None),
        route!(POST "/v1/reviews/{id}/votes", "vote_review", "Find a published review helpful (once per customer; a second vote changes nothing; not one's own)", reviews::vote, Write, None, 200, "signed-in customers", None, Some("Review"), &[401, 403, 404, 409], Some(false)),
        route!(POST "/v1/reviews/{id}/publish", "publish_review", "Publish a review (pending or rejected)", reviews::publish, Write, None, 200, "catalog:write", None, Some("Review"), &[401, 403, 404, 412], Some(false)),
        route!(POST "/v1/reviews/{id}/reject", "reject_review", "Reject a review, with a reason: shoppers no longer see it", reviews::reject, Write, Json, 200, "catalog:write", Some("ReviewRejection"), Some("Review"), &[401, 403, 404, 412, 422], Some(false)),
        route!(GET "/v1/admin/review-settings", "get_review_settings", "How new and edited reviews are moderated", reviews::get_settings, Read, None, 200, "catalog:write", None, Some("ReviewSettings"), &[401, 403], None),
        route!(PUT "/v1/admin/review-settings", "set_review_settings", "Premoderation on or off, and the words that hold a review for staff", reviews::set_settings, Write, Json, 200, "catalog:write", Some("ReviewSettings"), Some("ReviewSettings"), &[401, 403, 422], None),
        route!(DELETE "/v1/products/{id}", "archive_product", "Archive a product", catalog::archive_product, Write, None, 204, "catalog:write", None, None, &[401, 403, 404, 412], None),
        route!(GET "/v1/categories", "list_categories", "List categories", catalog::list_categories, Read, None, 200, "anyone", None, Some("CategoryList"), &[], None),
        route!(POST "/v1/categories", "create_category", "Create a category", catalog::create_category, Write, Json, 201, "catalog:write", Some("NewCategory"), Some("Category"), &[401, 403, 422], Some(false)),
        route!(GET "/v1/categories/{id}", "get_category", "A category", catalog::get_category, Read, None, 200, "anyone", None, Some("Category"), &[404], None),
        route!(PATCH "/v1/categories/{id}", "update_category", "Rename or move a category", catalog::update_category, Write, Json, 200, "catalog:write", Some("CategoryPatch"), Some("Category"), &[401, 403, 404, 412, 422], None),
        route!(DELETE "/v1/categories/{id}", "delete_category", "Delete an empty category", catalog::delete_category, Write, None, 204, "catalog:write", None, None, &[401, 403, 404, 409, 412], None),
        route!(GET "/v1/inventory/{sku}", "get_inventory", "A SKU's stock levels", inventory::get, Read, None, 200, "inventory:read", None, Some("Inventory"), &[401, 403, 404], None),
        route!(PUT "/v1/inventory/{sku}", "set_inventory", "Set a SKU's units on hand", inventory::set, Write, Json, 200, "inventory:write", Some("InventorySet"), Some("Inventory"), &[401, 403, 404, 409, 412, 422], None),
        route!(POST "/v1/inventory/{sku}/adjustments", "adjust_inventory", "Add or remove units on hand", inventory::adjust, Write, Json, 200, "inventory:write", Some("InventoryAdjustment"), Some("Inventory"), &[401, 403, 404, 409, 422], Some(false)),
        route!(GET "/v1/inventory/{sku}/locations", "get_inventory_by_location", "A SKU's totals and its level at every stock location", inventory::get_by_location, Read, None, 200, "inventory:read", None, Some("InventoryByLocation"), &[401, 403, 404], None),
        route!(PUT "/v1/inventory/{sku}/locations/{location_id}", "set_inventory_at_location", "Set a SKU's units on hand at one stock location (If-Match: an ETag of GET /v1/inventory/{sku}/locations, or the SKU's version as \"N\")", inventory::set_at_location, Write, Json, 200, "inventory:write", Some("InventorySet"), Some("InventoryByLocation"), &[401, 403, 404, 409, 412, 422], None),
        route!(POST "/v1/inventory/{sku}/locations/{location_id}/adjustments", "adjust_inventory_at_location", "Add or remove units on hand at one stock location", inventory::adjust_at_location, Write, Json, 200, "inventory:write", Some("InventoryAdjustment"), Some("InventoryByLocation"), &[401, 403, 404, 409, 422], Some(false)),
        route!(POST "/v1/inventory/{sku}/transfers", "transfer_inventory", "Move available units of a SKU from one stock location to another (its totals stay)", inventory::transfer, Write, Json, 200, "inventory:write", Some("InventoryTransfer"), Some("InventoryByLocation"), &[401, 403, 404, 409, 422], Some(false)),
        route!(GET "/v1/locations", "list_locations", "Every stock location: the default one first, then in the order they were created", inventory::list_locations, Read, None, 200, "inventory:read", None, Some("LocationList"), &[401, 403], None),
        route!(POST "/v1/locations", "create_location", "Create a stock location (a warehouse or a store)", inventory::create_location, Write, Json, 201, "inventory:write", Some("NewLocation"), Some("Location"), &[401, 403, 409, 422], Some(false)),
        route!(GET "/v1/locations/{id}", "get_location", "A stock location", inventory::get_location, Read, None, 200, "inventory:read", None, Some("Location"), &[401, 403, 404], None),
        route!(PATCH "/v1/locations/{id}", "update_location", "Rename a stock location, or change its kind or priority", inventory::update_location, Write, Json, 200, "inventory:write", Some("LocationPatch"), Some("Location"), &[401, 403, 404, 412, 422], None),
        route!(DELETE "/v1/locations/{id}", "delete_location", "Delete a stock location that holds no units (not the default one)", inventory::delete_location, Write, None, 204, "inventory:write", None, None, &[401, 403, 404, 409, 412], None),
        route!(PUT "/v1/inventory/{sku}/weight", "set_sku_weight", "Set a SKU's unit weight in grams, for weight-based shipping (a SKU without one weighs nothing)", shipping::set_weight, Write, Json, 200, "catalog:write", Some("SkuWeightInput"), Some("SkuWeight"), &[401, 403, 404, 422], Some(false)),
        route!(POST "/v1/shipping-methods", "create_shipping_method", "Create a shipping method: a flat rate, free over a threshold, or by weight band; optionally only to some countries", shipping::create_method, Write, Json, 201, "catalog:write", Some("NewShippingMethod"), Some("ShippingMethod"), &[401, 403, 409, 422], Some(false)),
        route!(GET "/v1/shipping-methods", "list_shipping_methods", "Every shipping method (at most 100), active or not, in the order they were created", shipping::list_methods, Read, None, 200, "anyone", None, Some("ShippingMethodList"), &[], None),
        route!(GET "/v1/shipping-methods/{id}", "get_shipping_method", "A shipping method", shipping::get_method, Read, None, 200, "anyone", None, Some("ShippingMethod"), &[404], None),
        route!(PATCH "/v1/shipping-methods/{id}", "update_shipping_method", "Rename a shipping method, or switch it on or off", shipping::update_method, Write, Json, 200, "catalog:write", Some("ShippingMethodPatch"), Some("ShippingMethod"), &[401, 403, 404, 422], None),
        route!(GET "/v1/tax-rates", "list_tax_rates", "Every tax zone's rate, by zone", shipping::list_tax_rates, Read, None, 200, "anyone", None, Some("TaxRateList"), &[], None),
        route!(PUT "/v1/tax-rates/{zone}", "set_tax_rate", "Set the tax rate of a country (DE) or a region of one (US-CA), in basis points; an address is taxed at its region's rate if set, else its country's", shipping::set_tax_rate, Write, Json, 200, "catalog:write", Some("TaxRateInput"), Some("TaxRate"), &[401, 403, 409, 422], Some(false)),
        route!(DELETE "/v1/tax-rates/{zone}", "delete_tax_rate", "Remove a zone's tax rate", shipping::delete_tax_rate, Write, None, 204, "catalog:write", None, None, &[401, 403, 404, 422], None),
        route!(POST "/v1/carts", "create_cart", "Open a cart (owned with a customer token, else a guest cart)", carts::create, Write, OptionalJson, 201, "anyone", Some("NewCart"), Some("Cart"), &[422], Some(false)),
        route!(GET "/v1/carts/{id}", "get_cart", "A cart with current prices. Carts are dropped (404) once unchanged for the carts' time to live (--cart-ttl-s) if open, or that long after their checkout if checked out", carts::get, Read, None, 200, "its owner, anyone for a guest cart, orders:read", None, Some("Cart"), &[403, 404], None),
        route!(POST "/v1/carts/{id}/items", "add_cart_item", "Add units of a SKU", carts::add_item, Write, Json, 200, "its owner, anyone for a guest cart, orders:write", Some("CartItemAdd"), Some("Cart"), &[403, 404, 409, 422], Some(false)),
        route!(PUT "/v1/carts/{id}/items/{sku}", "set_cart_item", "Set a line's quantity (0 removes it)", carts::set_item, Write, Json, 200, "its owner, anyone for a guest cart, orders:write", Some("CartItemSet"), Some("Cart"), &[403, 404, 409, 412, 422], None),
        route!(DELETE "/v1/carts/{id}/items/{sku}", "remove_cart_item", "Remove a line", carts::remove_item, Write, None, 204, "its owner, anyone for a guest cart, orders:write", None, None, &[403, 404, 409, 412, 422], None),
        route!(POST "/v1/carts/{id}/discount-codes", "add_cart_discount_code", "Enter a discount code on an open cart (entering it again changes nothing); rate-limited with sign-in (the auth class), so codes cannot be guessed faster than passwords", carts::add_code, Auth, Json, 200, "its owner, anyone for a guest cart, orders:write", Some("CartCode"), Some("Cart"), &[403, 404, 409, 422], Some(false)),
        route!(DELETE "/v1/carts/{id}/discount-codes/{code}", "remove_cart_discount_code", "Remove a discount code from an open cart", carts::remove_code, Write, None, 204, "its owner, anyone for a guest cart, orders:write", None, None, &[403, 404, 409, 412], None),
        route!(POST "/v1/discount-codes", "create_discount_code", "Create a discount code", promotions::create, Write, Json, 201, "catalog:write", Some("NewDiscountCode"), Some("DiscountCode"), &[401, 403, 409, 422], Some(false)),
        route!(GET "/v1/discount-codes", "list_discount_codes", "List discount codes in the order they were created", promotions::list, Read, None, 200, "catalog:write", None, Some("DiscountCodeList"), &[401, 403], None),
        route!(GET "/v1/discount-codes/{code}", "get_discount_code", "A discount code with its uses", promotions::get, Read, None, 200, "catalog:write", None, Some("DiscountCode"), &[401, 403, 404], None),
        route!(PATCH "/v1/discount-codes/{code}", "update_discount_code", "Switch a code on or off, move its end, change its usage limit", promotions::update, Write, Json, 200, "catalog:write", Some("DiscountCodePatch"), Some("DiscountCode"), &[401, 403, 404, 412, 422], None),
        route!(POST "/v1/promotions", "create_promotion", "Create an automatic promotion: of every buy + get eligible units in a cart, get are free (the cheapest; no code needed); applied before discount codes", promotions::create_promotion, Write, Json, 201, "catalog:write", Some("NewAutomaticPromotion"), Some("AutomaticPromotion"), &[401, 403, 409, 422], Some(false)),
        route!(GET "/v1/promotions", "list_promotions", "The automatic promotions in force, in creation order (staff with catalog:write see every one: scheduled, switched off and ended too)", promotions::list_promotions, Read, None, 200, "anyone", None, Some("AutomaticPromotionList"), &[], None),
        route!(PATCH "/v1/promotions/{id}", "update_promotion", "Switch an automatic promotion on or off, or move its end", promotions::update_promotion, Write, Json, 200, "catalog:write", Some("AutomaticPromotionPatch"), Some("AutomaticPromotion"), &[401, 403, 404, 409, 422], None),
        route!(POST "/v1/carts/{id}/checkout", "checkout", "Reserve every line's stock and place an order", carts::checkout, Write, OptionalJson, 201, "its owner, anyone for a guest cart, orders:write", Some("Checkout"), Some("Order"), &[403, 404, 409, 422], Some(true)),
        route!(GET "/v1/orders", "list_orders", "List orders", orders::list, Read, None, 200, "orders:read", None, Some("OrderList"), &[401, 403], None),
        route!(GET "/v1/orders/{id}", "get_order", "An order", orders::get, Read, None, 200, "its owner, anyone for a guest order, orders:read", None, Some("Order"), &[403, 404], None),
        route!(POST "/v1/orders/{id}/payments", "pay_order", "Pay with the test provider", orders::pay, Write, Json, 201, "its owner, anyone for a guest order, orders:write", Some("PaymentRequest"), Some("Payment"), &[402, 403, 404, 409, 422], Some(true)),
        route!(POST "/v1/orders/{id}/payment-calls", "start_payment_call", "Pay through a provider that answers later (the simulated asynchronous gateway `callback`): the call is recorded before the provider is asked, and the order is paid once the provider's signed callback authorizes it and the capture is recorded", orders::start_payment_call, Write, Json, 202, "its owner, anyone for a guest order, orders:write", Some("PaymentCallRequest"), Some("PaymentCall"), &[403, 404, 409, 422, 503], Some(true)),
        route!(GET "/v1/orders/{id}/payment-calls", "list_payment_calls", "The order's payments through providers, oldest first", orders::payment_calls, Read, None, 200, "its owner, anyone for a guest order, orders:read", None, Some("PaymentCallList"), &[403, 404], None),
        route!(POST "/v1/payment-callbacks/{provider}", "provider_callback", "A payment provider's answer to a payment call, signed with HMAC-SHA256 in the Emporium-Signature header (t=MS,v1=HEX over MS, a dot and the body; five minutes' replay window); an answer given twice changes nothing", orders::provider_callback, Write, Json, 200, "the provider (its signature)", Some("ProviderCallback"), Some("PaymentCall"), &[401, 404, 409, 422], None),
        route!(POST "/v1/orders/{id}/cancel", "cancel_order", "Cancel a pending order, releasing its stock", orders::cancel, Write, OptionalJson, 200, "its owner, anyone for a guest order, orders:write", None, Some("Order"), &[403, 404, 409, 412], Some(false)),
        route!(POST "/v1/orders/{id}/refunds", "refund_order", "Refund part or all of what a paid order captured (money only: the units stay sold); an empty body refunds everything not yet refunded", orders::refund, Write, OptionalJson, 201, "payments:refund", Some("RefundRequest"), Some("Refund"), &[401, 403, 404, 409, 422], Some(true)),
        route!(GET "/v1/orders/{id}/transactions", "list_order_transactions", "The order's ledger: every authorization, capture, void and refund, oldest first, and the sums of captures and refunds", orders::transactions, Read, None, 200, "its owner, anyone for a guest order, orders:read", None, Some("Ledger"), &[403, 404], None),
        route!(POST "/v1/orders/{id}/returns", "request_return", "Ask to send back units of a fulfilled order, within the return window", returns::request, Write, Json, 201, "its owner, anyone for a guest order, orders:write", Some("NewReturn"), Some("ReturnWithOrder"), &[403, 404, 409, 422], Some(false)),
        route!(GET "/v1/orders/{id}/returns", "list_order_returns", "The order's returns, oldest first", returns::of_order, Read, None, 200, "its owner, anyone for a guest order, orders:read", None, Some("ReturnList"), &[403, 404], None),
        route!(GET "/v1/returns", "list_returns", "Returns in the order they were requested (the queue: status=requested)", returns::list, Read, None, 200, "orders:read", None, Some("ReturnList"), &[401, 403], None),
        route!(GET "/v1/returns/{id}", "get_return", "A return", returns::get, Read, None, 200, "its order's owner, anyone for a guest order's, orders:read", None, Some("Return"), &[403, 404], None),
        route!(POST "/v1/returns/{id}/approve", "approve_return", "Approve a requested return", returns::approve, Write, OptionalJson, 200, "orders:write", Some("ReturnDecision"), Some("ReturnWithOrder"), &[401, 403, 404, 409, 422], Some(false)),
        route!(POST "/v1/returns/{id}/reject", "reject_return", "Reject a requested or approved return, with a reason", returns::reject, Write, Json, 200, "orders:write", Some("ReturnDecision"), Some("ReturnWithOrder"), &[401, 403, 404, 409, 422], Some(false)),
        route!(POST "/v1/returns/{id}/receive", "receive_return", "Receive an approved return's units: restock them (unless listed) and refund what they were paid, never more than is left to refund", returns::receive, Write, OptionalJson, 200, "payments:refund", Some("ReturnReceipt"), Some("ReturnWithOrder"), &[401, 403, 404, 409, 422], Some(false)),
        route!(GET "/v1/admin/stats", "get_stats", "Business KPIs by time, folded from the log: carts (created; with items, converted and abandoned counted in the bucket the cart was created, by the abandonment window of one day), orders placed and paid, GMV and average order value per currency, refunds, conversion rate (checkouts per cart created), abandonment rate (abandoned per decided cart), payment decline rate (provider declines per attempt), the top 10 products by units in paid orders (over the whole hours the range overlaps) and the flash sales overlapping the range with their sell-through. Retention (the defaults; the server's --kpi-minute-days, --kpi-product-hour-days and --kpi-retention-days set them): counts per minute are kept 7 days, then per hour (bucket=minute over a range from before then is refused, 422 on `bucket`); product sales per hour 7 days, then per day (top_products_from/top_products_to widen to whole days there); everything 400 days, then only in the totals (older buckets count nothing)", stats::stats, Read, None, 200, "orders:read", None, Some("Stats"), &[400, 401, 403, 422], None),
        route!(GET "/v1/admin/notification-templates", "list_notification_templates", "The template in use for each kind of customer message: the shop's own (custom) or the default. Templates use Jinja syntax over shop, customer, order (lines, totals as display strings), payment, refund and event", notifications::templates, Read, None, 200, "ops:admin", None, Some("NotificationTemplateList"), &[401, 403], None),
        route!(PUT "/v1/admin/notification-templates/{kind}", "save_notification_template", "Replace a kind's template; it must parse and render a sample order within the work limit, or 422 names the field and the error", notifications::save_template, Write, Json, 200, "ops:admin", Some("NotificationTemplateInput"), Some("NotificationTemplate"), &[401, 403, 404, 422], None),
        route!(DELETE "/v1/admin/notification-templates/{kind}", "reset_notification_template", "Go back to the default template of a kind", notifications::reset_template, Write, None, 204, "ops:admin", None, None, &[401, 403, 404], None),
        route!(GET "/v1/admin/notifications", "list_notifications", "The outbox: rendered customer messages by status (pending by default; sent and failed keep the latest 1000 each), newest first, with the count of the status", notifications::outbox, Read, None, 200, "ops:admin", None, Some("NotificationList"), &[400, 401, 403], None),
        route!(GET "/v1/admin/notifications/{id}", "get_notification", "A message of the outbox", notifications::get, Read, None, 200, "ops:admin", None, Some("Notification"), &[401, 403, 404], None),
        route!(POST "/v1/admin/notifications/{id}/retry", "retry_notification", "Make a failed message pending again, due now, its attempts counted anew (409 when it is not failed; 503 when the outbox is full)", notifications::retry, Write, None, 200, "ops:admin", None, Some("Notification"), &[401, 403, 404, 409, 503], None),
        route!(POST "/v1/admin/webhooks", "create_webhook", "Register an endpoint for the event feed's records of the given types: deliveries are POSTed in log order, signed (Emporium-Signature: t=UNIX_SECONDS,v1=hex HMAC-SHA256 of \"t.body\" under the secret; refuse a t more than 5 minutes off), at least once (deduplicate on Emporium-Event-Id), retried with exponential backoff and jitter, behind a breaker per endpoint, and given up to the dead letters after the last attempt. The secret (drawn when not given) is shown only in this answer. URLs that resolve to loopback, private or link-local addresses are refused at delivery unless the server allows them (--webhook-allow-private); such an address written in the URL, in any form a resolver reads as one (127.1 included), is refused here, 422 on url", webhooks::create, Write, Json, 201, "ops:admin", Some("NewWebhook"), Some("Webhook"), &[401, 403, 409, 422], None),
        route!(GET "/v1/admin/webhooks", "list_webhooks", "Every webhook with its delivery status (oldest first)", webhooks::list, Read, None, 200, "ops:admin", None, Some("WebhookList"), &[401, 403], None),
        route!(GET "/v1/admin/webhooks/{id}", "get_webhook", "A webhook and its delivery status: the log position delivered, the breaker, counts since the start", webhooks::get, Read, None, 200, "ops:admin", None, Some("Webhook"), &[401, 403, 404], None),
        route!(DELETE "/v1/admin/webhooks/{id}", "delete_webhook", "Delete a webhook: deliveries stop, its dead letters go", webhooks::delete, Write, None, 204, "ops:admin", None, None, &[401, 403, 404], None),
        route!(GET "/v1/admin/webhooks/{id}/deliveries", "list_webhook_deliveries", "The webhook's latest delivery attempts (100 at most, since the start), newest first", webhooks::deliveries, Read, None, 200, "ops:admin", None, Some("WebhookDeliveries"), &[401, 403, 404], None),
        route!(GET "/v1/admin/webhooks/{id}/dead-letters", "list_dead_letters", "Records the webhook gave up after its last attempt, oldest first (1000 kept at most)", webhooks::dead_letters, Read, None, 200, "ops:admin", None, Some("DeadLetterList"), &[401, 403, 404], None),
        route!(POST "/v1/admin/webhooks/{id}/dead-letters/{dead_letter_id}/redeliver", "redeliver_dead_letter", "Send a dead letter again, once, now: delivered, it is dropped; refused or unanswered, 502 webhook_delivery_failed and it stays", webhooks::redeliver, Write, None, 200, "ops:admin", None, Some("Redelivery"), &[401, 403, 404, 502], None),
        route!(GET "/v1/admin/reconciliation", "reconcile_payments", "Check every order's status and total against its ledger", orders::reconciliation, Read, None, 200, "orders:read", None, Some("Reconciliation"), &[401, 403], None),
        route!(GET "/v1/orders/{id}/stock-locations", "get_order_stock_locations", "Where an order's units are reserved (pending) or left from (paid): the pick list of a multi-location shop", inventory::order_sources, Read, None, 200, "inventory:read", None, Some("OrderStockLocations"), &[401, 403, 404], None),
        route!(POST "/v1/orders/{id}/fulfillments", "fulfil_order", "Mark a paid order fulfilled", orders::fulfil, Write, OptionalJson, 200, "orders:write", None, Some("Order"), &[401, 403, 404, 409], Some(false)),
        route!(GET "/v1/search", "search_products", "Search active products: every word must match (typos of 1-2 edits forgiven, the last word also as a prefix), with filters, facets and sorts", search::search, Read, None, 200, "anyone", None, Some("SearchResults"), &[422], None),
        route!(GET "/v1/search/suggest", "suggest_products", "Product titles completing what the shopper is typing", search::suggest, Read, None, 200, "anyone", None, Some("Suggestions"), &[422], None),
        route!(POST "/v1/flash-sales", "create_flash_sale", "Create a flash sale, carving its units out of the SKU's stock", flash_sales::create, Write, Json, 201, "catalog:write", Some("NewFlashSale"), Some("FlashSale"), &[401, 403, 409, 422], Some(false)),
        route!(GET "/v1/flash-sales", "list_flash_sales", "List flash sales", flash_sales::list, Read, None, 200, "anyone", None, Some("FlashSaleList"), &[], None),
        route!(GET "/v1/flash-sales/{id}", "get_flash_sale", "A flash sale with its units remaining, reserved and sold", flash_sales::get, Read, None, 200, "anyone", None, Some("FlashSale"), &[404], None),
        route!(GET "/v1/flash-sales/{id}/stream", "stream_flash_sale", "Server-Sent Events: the sale at once, then its counts as they change (at most every 100 ms, at least every second while open), a final status", flash_sales::stream, Read, None, 200, "anyone", None, None, &[404], None),
        route!(POST "/v1/flash-sales/{id}/cancel", "cancel_flash_sale", "Cancel a flash sale; the units not taken go back to stock", flash_sales::cancel, Write, OptionalJson, 200, "catalog:write", None, Some("FlashSale"), &[401, 403, 404, 409], Some(false)),
        route!(POST "/v1/flash-sales/{id}/purchases", "purchase_flash_sale", "Buy units of a live flash sale: a pending order at the sale price", flash_sales::purchase, Write, OptionalJson, 201, "signed-in customers", Some("FlashSalePurchase"), Some("Order"), &[401, 403, 404, 409, 422], Some(true)),
        route!(GET "/v1/events", "list_events", "The event feed: public records of the durable log (catalog, stock, orders, payments, refunds, discounts, returns, flash sales) in log order from a cursor, filtered by type, with an optional long poll", events::list, Read, None, 200, "ops:admin or events:read (an API client scoped to the feed)", None, Some("EventPage"), &[401, 403, 410, 422], None),
        route!(DELETE "/v1/events/consumers/{name}", "delete_event_consumer", "Forget a named feed consumer; the log it held may be trimmed", events::forget, Write, None, 204, "ops:admin", None, None, &[401, 403, 404], None),
        route!(GET "/v1/admin/replication", "get_replication", "Replication status", ops::replication, Read, None, 200, "ops:admin", None, Some("Replication"), &[401, 403], None),
        route!(GET "/v1/admin/digest", "get_digest", "A digest of every table of the state (rows and an order-independent hash), to compare a standby with its primary at the same LSN", ops::digest, Read, None, 200, "ops:admin", None, Some("Digest"), &[401, 403], None),
        route!(POST "/v1/admin/promote", "promote", "Promote this standby: it stops following its primary, starts the next epoch (recorded durably) and takes writes", ops::promote, Write, OptionalJson, 200, "ops:admin", None, Some("Promotion"), &[401, 403, 409, 503], None),
        route!(POST "/v1/admin/checkpoints", "create_checkpoint", "Write a consistent on-disk checkpoint", ops::checkpoint, Write, OptionalJson, 201, "ops:admin", None, Some("Checkpoint"), &[401, 403], Some(false)),
    ]
});

static ROUTER: LazyLock<matchit::Router<Vec<usize>>> = LazyLock::new(|| {
    let mut paths: Vec<(&'static str, Vec<usize>)> = Vec::new();
    for (index, route) in ROUTES.iter().enumerate() {
        match paths.iter_mut().find(|(path, _)| *path == route.path) {
            Some((_, indexes)) => indexes.push(index),
            None => paths.push((route.path, vec![index])),
        }
    }
    let mut router = matchit::Router::new();
    for (path, indexes) in paths {
        router.insert(path, indexes).expect("route paths do not overlap");
    }
    router
});

/// A route's place in [`ROUTES`]; `None` for one made elsewhere (a test's).
pub fn index(route: &'static Route) -> Option<usize> {
    let offset = (route as *const Route as usize).checked_sub(ROUTES.as_ptr() as usize)?;
    let index = offset / std::mem::size_of::<Route>();
    ROUTES.get(index).filter(|r| std::ptr::eq(*r, route)).map(|_| index)
}

/// The route for a method and path, with its path parameters; 404 or 405 otherwise.
pub fn find(method: &Method, path: &str) -> Result<(&'static Route, Params), Problem> {
    let matched = ROUTER
        .at(path)
        .map_err(|_| Problem::not_found(format!("no endpoint at {}", truncate(path))))?;
    let params = matched.params.iter().map(|(k, v)| (k, v.to_string())).collect();
    let routes = matched.value.iter().map(|&i| &ROUTES[i]);
    if let Some(route) = routes
        .clone()
        .find(|r| r.method == method || (method == Method::HEAD && r.method == Method::GET))
    {
        return Ok((route, params));
    }
    let allow = routes.map(|r| r.method.as_str()).collect::<Vec<_>>().join(", ");
    let mut problem = Problem::new(
        405,
        "method_not_allowed",
        "Method not allowed",
        format!("{path} allows {allow}"),
    );
    problem.allow = Some(allow);
    Err(problem)
}

fn truncate(path: &str) -> String {
    path.chars().take(200).collect()
}

/// Runs the route's handler.
pub fn handle(call: Call) -> HandlerFuture {
    (call.route.handler)(call)
}
