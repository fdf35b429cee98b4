//! A hit's stored fields, read from the document store straight into the hit.
//!
//! Read as a `TantivyDocument`, each value is decoded into an owned value, copied into
//! the document's compact buffer, then copied again into the hit. [`StoredHit`] takes
//! each string as it is decoded and keeps only the fields a hit shows.

use std::sync::LazyLock;

use tantivy::schema::document::{
    DeserializeError, DocumentDeserialize, DocumentDeserializer, ValueDeserialize,
    ValueDeserializer, ValueVisitor,
};

use crate::snippets::Highlighter;
use crate::{Fields, Hit};

/// The schema's fields: their numbers are fixed by the order [`crate::schema`] adds
/// them in, the same for every index this code opens.
static FIELDS: LazyLock<Fields> = LazyLock::new(|| crate::schema().1);

/// What the store holds of one product that a hit shows.
#[derive(Debug, Default)]
pub(crate) struct StoredHit {
    id: String,
    title: String,
    description: String,
    brand: String,
    currency: String,
    price: i64,
    rating: f64,
    in_stock: bool,
}

impl StoredHit {
    /// The hit, with the title and description marked by `highlights` if given.
    pub(crate) fn into_hit(
        self,
        score: f32,
        highlights: Option<&mut (Highlighter, Highlighter)>,
    ) -> Hit {
        let (title_highlight, description_highlight) = match highlights {
            Some((title, description)) => {
                (title.html(&self.title), description.html(&self.description))
            }
            None => (None, None),
        };
        Hit {
            id: self.id,
            title: self.title,
            brand: self.brand,
            price: self.price,
            currency: self.currency,
            rating: self.rating,
            in_stock: self.in_stock,
            score,
            title_highlight,
            description_highlight,
        }
    }
}

impl DocumentDeserialize for StoredHit {
    fn deserialize<'de, D>(mut fields: D) -> Result<StoredHit, DeserializeError>
    where
        D: DocumentDeserializer<'de>,
    {
        let f = &*FIELDS;
        let mut hit = StoredHit::default();
        // A field stored twice keeps its first value, as `Document::get_first` reads it.
        let mut seen = [false; 8];
        while let Some((field, value)) = fields.next_field::<Stored>()? {
            let (slot, wanted) = match field {
                _ if field == f.id => (0, true),
                _ if field == f.title => (1, true),
                _ if field == f.description => (2, true),
                _ if field == f.brand => (3, true),
                _ if field == f.currency => (4, true),
                _ if field == f.price => (5, true),
                _ if field == f.rating => (6, true),
                _ if field == f.in_stock => (7, true),
                _ => (0, false),
            };
            if !wanted || std::mem::replace(&mut seen[slot], true) {
                continue;
            }
            match (slot, value) {
                (0, Stored::Text(text)) => hit.id = text,
                (1, Stored::Text(text)) => hit.title = text,
                (2, Stored::Text(text)) => hit.description = text,
                (3, Stored::Text(text)) => hit.brand = text,
                (4, Stored::Text(text)) => hit.currency = text,
                (5, Stored::I64(price)) => hit.price = price,
                (6, Stored::F64(rating)) => hit.rating = rating,
                (7, Stored::Bool(in_stock)) => hit.in_stock = in_stock,
                // A value of another type than the schema's: the field reads as unset.
                _ => {}
            }
        }
        Ok(hit)
    }
}

/// A stored value of one of the types the schema stores.
enum Stored {
    Text(String),
    I64(i64),
    F64(f64),
    Bool(bool),
    Other,
}

impl ValueDeserialize for Stored {
    fn deserialize<'de, D>(value: D) -> Result<Stored, DeserializeError>
    where
        D: ValueDeserializer<'de>,
    {
        value.deserialize_any(StoredVisitor)
    }
}

struct StoredVisitor;

impl ValueVisitor for StoredVisitor {
    type Value = Stored;

    fn visit_null(&self) -> Result<Stored, DeserializeError> {
        Ok(Stored::Other)
    }

    fn visit_string(&self, text: String) -> Result<Stored, DeserializeError> {
        Ok(Stored::Text(text))
    }

    fn visit_u64(&self, _: u64) -> Result<Stored, DeserializeError> {
        Ok(Stored::Other)
    }

    fn visit_i64(&self, value: i64) -> Result<Stored, DeserializeError> {
        Ok(Stored::I64(value))
    }

    fn visit_f64(&self, value: f64) -> Result<Stored, DeserializeError> {
        Ok(Stored::F64(value))
    }

    fn visit_bool(&self, value: bool) -> Result<Stored, DeserializeError> {
        Ok(Stored::Bool(value))
    }
}
