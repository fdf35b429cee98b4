//! Reviews through the embedding API: one per customer and product, verified
//! purchases, moderation (premoderation, held words, publish and reject), helpful
//! votes, the exact rating as data, the sorted listings paged without loss, and a
//! restart.

use std::sync::Arc;

use emporium_engine::*;
use emporium_tests::*;

struct Shop {
    te: TestEngine,
    product: ProductId,
    other: ProductId,
}

fn shop() -> Shop {
    let te = TestEngine::new();
    let product = stocked_sku(&te.shop, "R-1", 1000, 100).id;
    let other = stocked_sku(&te.shop, "R-2", 500, 100).id;
    Shop { te, product, other }
}

impl Shop {
    fn customer(&self, name: &str) -> CustomerId {
        let register = RegisterCustomer {
            email: format!("{}@example.com", name.to_lowercase()),
            name: name.into(),
            role: Role::Customer,
            credential: "hash".into(),
        };
        self.te.shop.send(register).unwrap().id
    }

    fn review(&self, who: CustomerId, rating: i64, body: &str) -> Result<Arc<Review>> {
        self.review_of(self.product, who, rating, body)
    }

    fn review_of(
        &self,
        product: ProductId,
        who: CustomerId,
        rating: i64,
        body: &str,
    ) -> Result<Arc<Review>> {
        self.te.shop.send(SubmitReview {
            product_id: product.to_string(),
            customer_id: who,
            rating,
            title: "My view".into(),
            body: body.into(),
        })
    }

    /// An order of `sku` by `who`, paid or not.
    fn buy(&self, who: CustomerId, sku: &str, paid: bool) {
        let cart = self
            .te
            .shop
            .send(CreateCart { customer_id: Some(who.to_string()), currency: None })
            .unwrap();
        let add = AddCartItem { cart_id: cart.id.to_string(), sku: sku.into(), quantity: 1 };
        self.te.shop.send(add).unwrap();
        let order = checkout(&self.te.shop, &cart.id).unwrap();
        if paid {
            pay(&self.te.shop, &order.id).unwrap();
        }
    }

    fn moderate(
        &self,
        review: &Review,
        publish: bool,
        reason: Option<&str>,
    ) -> Result<Arc<Review>> {
        self.te.shop.send(ModerateReview {
            review_id: review.id.to_string(),
            publish,
            reason: reason.map(str::to_string),
            expected_version: None,
        })
    }

    fn rating(&self) -> ([u32; 5], u64, f64) {
        let rating = self.te.state().rating(&self.product);
        (rating.stars, rating.sum(), rating.average())
    }
}

#[test]
fn the_rating_is_exact_counts_per_star_and_a_rounded_average() {
    // (stars given, expected average): sums over counts to two decimals, half up.
    let cases: [(&[u8], f64); 6] = [
        (&[], 0.0),
        (&[5], 5.0),
        (&[5, 4], 4.5),
        (&[2, 2, 3], 2.33),
        (&[5, 5, 4], 4.67),
        (&[1, 2, 2, 2, 2, 2, 2, 2], 1.88),
    ];
    for (given, average) in cases {
        let mut counts = StarCounts::default();
        for &stars in given {
            counts.stars[usize::from(stars - 1)] += 1;
        }
        let sum: u64 = given.iter().map(|&s| u64::from(s)).sum();
        assert_eq!((counts.count(), counts.sum()), (given.len() as u32, sum));
        assert_eq!(counts.average(), average, "{given:?}");
    }
}

#[test]
fn one_review_per_customer_and_product_verified_by_a_paid_order() {
    let s = shop();
    let (ann, bob, cy) = (s.customer("Ann"), s.customer("Bob"), s.customer("Cy"));
    s.buy(ann, "R-1", true);
    s.buy(bob, "R-1", false);
    s.buy(cy, "R-2", true);
    let ann_review = s.review(ann, 5, "Great").unwrap();
    let bob_review = s.review(bob, 2, "Meh").unwrap();
    let cy_review = s.review(cy, 4, "Bought the other one").unwrap();
    // Paid for this product; an unpaid order or another product does not count.
    let verified = [&ann_review, &bob_review, &cy_review].map(|r| r.verified_purchase);
    assert_eq!(verified, [true, false, false]);
    assert_eq!(s.rating(), ([0, 1, 0, 1, 1], 11, 3.67));

    // A second review edits the first: same id, its stars move in the rating.
    let edited = s.review(ann, 3, "On reflection").unwrap();
    assert_eq!((edited.id, edited.version, edited.rating), (ann_review.id, 2, 3));
    assert_eq!(edited.created_at, ann_review.created_at);
    assert_eq!(s.rating(), ([0, 1, 1, 1, 0], 9, 3.0));
    // Bob pays later: his edit is verified from then on.
    s.buy(bob, "R-1", true);
    assert!(s.review(bob, 2, "Meh, paid").unwrap().verified_purchase);
    let review = s.te.state().review_by(&s.product, &bob).unwrap();
    assert_eq!(review.id, bob_review.id);

    let refusals = [
        (s.review(ann, 0, ""), "validation_failed: rating"),
        (s.review(ann, 6, ""), "validation_failed: rating"),
        (s.review(ann, 3, &"x".repeat(REVIEW_BODY_MAX + 1)), "validation_failed: body"),
        (s.review_of(ProductId::from_seq(99), ann, 3, ""), "not_found: product"),
        (s.review(CustomerId::from_seq(99), 3, ""), "not_found: customer"),
    ];
    for (refused, code) in refusals {
        assert_eq!(outcome(&refused), code);
    }
    assert_eq!(s.rating(), ([0, 1, 1, 1, 0], 9, 3.0), "refusals changed nothing");
}

#[test]
fn moderation_holds_publishes_and_rejects() {
    let s = shop();
    let (ann, bob, cy, dee) =
        (s.customer("Ann"), s.customer("Bob"), s.customer("Cy"), s.customer("Dee"));
    s.te.shop
        .send(SetReviewSettings { premoderation: false, hold_words: vec!["Spam".into()] })
        .unwrap();
    assert_eq!(s.te.state().review_settings().hold_words, ["spam"]);
    // (author, body, status, reason): a held word holds whatever its case, as a whole
    // word only.
    let cases = [
        (ann, "Fine product", ReviewStatus::Published, None),
        (bob, "buy SPAM here!", ReviewStatus::Pending, Some("held: contains \"spam\"")),
        (cy, "spammy but fine", ReviewStatus::Published, None),
    ];
    let mut reviews = Vec::new();
    for (who, body, status, reason) in cases {
        let review = s.review(who, 4, body).unwrap();
        assert_eq!((review.status, review.reason.as_deref()), (status, reason), "{body}");
        reviews.push(review);
    }
    assert_eq!(s.rating().0, [0, 0, 0, 2, 0], "a held review is not counted");
    let queue = s.te.state().reviews_with_status(ReviewStatus::Pending, None, 10);
    assert_eq!(queue.items.iter().map(|r| r.id).collect::<Vec<_>>(), [reviews[1].id]);

    // Premoderation: everything new or edited waits, and an edit leaves the rating.
    s.te.shop.send(SetReviewSettings { premoderation: true, hold_words: vec![] }).unwrap();
    let waiting = s.review(dee, 1, "Awful").unwrap();
    assert_eq!(waiting.status, ReviewStatus::Pending);
    let edited = s.review(ann, 5, "Even better").unwrap();
    assert_eq!(edited.status, ReviewStatus::Pending);
    assert_eq!(s.rating().0, [0, 0, 0, 1, 0]);

    // Staff publish and reject.
    assert_eq!(outcome(&s.moderate(&waiting, false, None)), "validation_failed: reason");
    let published = s.moderate(&waiting, true, None).unwrap();
    assert_eq!(published.status, ReviewStatus::Published);
    s.moderate(&edited, true, None).unwrap();
    assert_eq!(s.rating().0, [1, 0, 0, 1, 1]);
    let rejected = s.moderate(&reviews[2], false, Some("off topic")).unwrap();
    assert_eq!(
        (rejected.status, rejected.reason.as_deref()),
        (ReviewStatus::Rejected, Some("off topic"))
    );
    assert_eq!(s.rating().0, [1, 0, 0, 0, 1], "a rejected review leaves the rating");
    let stale = ModerateReview {
        review_id: rejected.id.to_string(),
        publish: true,
        reason: None,
        expected_version: Some(1),
    };
    assert!(outcome(&s.te.shop.send(stale)).starts_with("version_mismatch"));
    let rejected_list = s.te.state().reviews_with_status(ReviewStatus::Rejected, None, 10);
    assert_eq!(rejected_list.items.len(), 1);
    // A note given with a publication is not kept (a published review shows none).
    let noted = s.moderate(&published, true, Some("fine")).unwrap();
    assert_eq!((noted.reason.as_deref(), noted.version), (None, published.version));
    // Its author edits a rejected review: it goes back to staff, not straight up.
    s.te.shop.send(SetReviewSettings { premoderation: false, hold_words: vec![] }).unwrap();
    let resubmitted = s.review(cy, 4, "on topic now").unwrap();
    assert_eq!(
        (resubmitted.status, resubmitted.reason.as_deref()),
        (ReviewStatus::Pending, Some("edited after a rejection"))
    );
    assert_eq!(s.rating().0, [1, 0, 0, 0, 1], "still not counted");
    // Shoppers see the published ones only.
    let listed = s.te.state().product_reviews(&s.product, ReviewSort::Newest, None, 10);
    let ids: Vec<ReviewId> = listed.items.iter().map(|r| r.id).collect();
    assert_eq!(ids, [waiting.id, edited.id], "newest first, by when first written");

    let too_many = SetReviewSettings {
        premoderation: false,
        hold_words: (0..=HOLD_WORDS_MAX).map(|i| format!("w{i}")).collect(),
    };
    assert_eq!(outcome(&s.te.shop.send(too_many)), "validation_failed: hold_words");
    let not_a_word =
        SetReviewSettings { premoderation: false, hold_words: vec!["two words".into()] };
    assert_eq!(outcome(&s.te.shop.send(not_a_word)), "validation_failed: hold_words[0]");
}

#[test]
fn helpful_votes_sort_and_page_the_listing_and_survive_a_restart() {
    let s = shop();
    let people: Vec<CustomerId> = (0..7).map(|i| s.customer(&format!("P{i}"))).collect();
    // Five reviews (stars 3, 5, 1, 4, 5); then votes: review i gets `votes[i]`.
    let stars = [3, 5, 1, 4, 5];
    let reviews: Vec<Arc<Review>> =
        people.iter().zip(stars).map(|(&who, n)| s.review(who, n, "words").unwrap()).collect();
    let votes: [u32; 5] = [2, 0, 3, 2, 1];
    for (review, &n) in reviews.iter().zip(&votes) {
        let voters = people.iter().filter(|&&p| p != review.customer_id).take(n as usize);
        for &voter in voters {
            let vote = VoteReview { review_id: review.id.to_string(), customer_id: voter };
            let first = s.te.shop.send(vote.clone()).unwrap();
            let again = s.te.shop.send(vote).unwrap();
            assert_eq!(again.helpful, first.helpful, "a second vote counts nothing");
        }
    }
    let helpful: Vec<u32> =
        reviews.iter().map(|r| s.te.state().review(&r.id).unwrap().helpful).collect();
    assert_eq!(helpful, votes);
    let own =
        VoteReview { review_id: reviews[0].id.to_string(), customer_id: reviews[0].customer_id };
    assert_eq!(outcome(&s.te.shop.send(own)), "invalid_state");

    // Each order, walked two at a time, against the order sorted here.
    let te = s.te.reopen();
    let sorted = |key: &dyn Fn(usize) -> (i64, usize)| {
        let mut order: Vec<usize> = (0..5).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(key(i)));
        order.into_iter().map(|i| reviews[i].id).collect::<Vec<_>>()
    };
    let cases: [(ReviewSort, Vec<ReviewId>); 4] = [
        (ReviewSort::Newest, sorted(&|i| (0, i))),
        (ReviewSort::MostHelpful, sorted(&|i| (i64::from(votes[i]), i))),
        (ReviewSort::HighestRating, sorted(&|i| (stars[i], i))),
        (ReviewSort::LowestRating, sorted(&|i| (-stars[i], i))),
    ];
    for (sort, expected) in cases {
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = te.state().product_reviews(&s.product, sort, after, 2);
            walked.extend(page.items.iter().map(|r| r.id));
            let Some(next) = page.next else { break };
            let (first, seq) = next.split_once('.').unwrap();
            after = Some((first.parse().unwrap(), seq.parse().unwrap()));
        }
        assert_eq!(walked, expected, "{sort:?}");
    }
    // The rating and the votes came back from the rows.
    assert_eq!(te.state().rating(&s.product).stars, [1, 0, 1, 1, 2]);
    assert!(te.state().has_voted(&reviews[2].id, &people[0]));
    assert_eq!(te.state().rating(&s.other), StarCounts::default());
}
