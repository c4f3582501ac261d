#![doc = include_str!("../README.md")]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::quote;
use syn::{Attribute, Data, DeriveInput, Fields, Ident, LitInt, LitStr, Path, parse_macro_input};

/// Implements `cqrs_core::DomainEvent`: the stable type name stored with each event (the
/// type's or variant's name unless `#[event(name = "...")]` says otherwise) and its schema
/// version (`#[event(version = N)]`, 1 by default). On an enum, each variant is one event
/// type; a version on the enum applies to variants without their own.
///
/// ```
/// use cqrs_core::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// #[event(name = "MoneyDeposited")]
/// struct Deposited { amount: i64 }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// enum OrderEvent {
///     Placed { total: i64 },
///     #[event(name = "OrderCancelled", version = 2)]
///     Cancelled { reason: String },
/// }
///
/// assert_eq!(Deposited { amount: 1 }.event_type(), "MoneyDeposited");
/// assert_eq!(OrderEvent::Placed { total: 1 }.event_type(), "Placed");
/// assert_eq!(OrderEvent::Cancelled { reason: "x".into() }.event_version(), 2);
/// ```
#[proc_macro_derive(DomainEvent, attributes(event))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    domain_event(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `cqrs_core::ReadModel` and `cqrs_mongo::MongoReadModel` for a document
/// struct: `#[read_model(collection = "...")]` names its collection (required),
/// `database = "..."` a database other than the client's default, `indexes = path` a
/// `fn() -> Vec<IndexModel>` declaring its secondary indexes. The id is the field marked
/// `#[read_model(id)]`, else the one serialized as `_id`, else the field named `id`.
///
/// ```
/// use cqrs_core::ReadModel as _;
/// use cqrs_mongo::{IndexModel, MongoReadModel, ReadModel, bson::doc};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, ReadModel)]
/// #[read_model(collection = "customers", indexes = customer_indexes)]
/// struct Customer {
///     #[serde(rename = "_id")]
///     id: String,
///     email: String,
/// }
///
/// fn customer_indexes() -> Vec<IndexModel> {
///     vec![IndexModel::builder().keys(doc! { "email": 1 }).build()]
/// }
///
/// let c = Customer { id: "c-1".into(), email: "a@b".into() };
/// assert_eq!(c.id(), "c-1");
/// assert_eq!(Customer::COLLECTION, "customers");
/// assert_eq!(Customer::indexes().len(), 1);
/// ```
#[proc_macro_derive(ReadModel, attributes(read_model))]
pub fn derive_read_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    read_model(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// `#[event(name = "...", version = N)]` of one item.
#[derive(Default)]
struct EventAttr {
    name: Option<LitStr>,
    version: Option<LitInt>,
}

fn event_attr(attrs: &[Attribute]) -> syn::Result<EventAttr> {
    let mut out = EventAttr::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                out.name = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("version") {
                out.version = Some(meta.value()?.parse()?);
            } else {
                return Err(meta.error("expected `name = \"...\"` or `version = N`"));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

fn domain_event(input: &DeriveInput) -> syn::Result<Tokens> {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let outer = event_attr(&input.attrs)?;
    let one = |default: &Ident, attr: EventAttr| {
        let name = attr
            .name
            .unwrap_or_else(|| LitStr::new(&default.to_string(), default.span()));
        let version = attr
            .version
            .or(outer.version.clone())
            .unwrap_or_else(|| LitInt::new("1", Span::call_site()));
        (name, version)
    };
    let (types, versions) = match &input.data {
        Data::Struct(_) => {
            let (name, version) = one(
                ident,
                EventAttr {
                    name: outer.name.clone(),
                    version: None,
                },
            );
            (quote! { #name }, quote! { #version })
        }
        Data::Enum(data) => {
            if outer.name.is_some() {
                return Err(syn::Error::new_spanned(
                    ident,
                    "an enum's variants are the event types: put `name` on each variant",
                ));
            }
            let mut types = Vec::new();
            let mut versions = Vec::new();
            for variant in &data.variants {
                let v = &variant.ident;
                let (name, version) = one(v, event_attr(&variant.attrs)?);
                let pattern = match &variant.fields {
                    Fields::Named(_) => quote! { Self::#v { .. } },
                    Fields::Unnamed(_) => quote! { Self::#v(..) },
                    Fields::Unit => quote! { Self::#v },
                };
                types.push(quote! { #pattern => #name });
                versions.push(quote! { #pattern => #version });
            }
            (
                quote! { match self { #(#types,)* } },
                quote! { match self { #(#versions,)* } },
            )
        }
        Data::Union(_) => {
            return Err(syn::Error::new_spanned(
                ident,
                "DomainEvent: unions are not events",
            ));
        }
    };
    Ok(quote! {
        impl #impl_generics ::cqrs_core::DomainEvent for #ident #ty_generics #where_clause {
            fn event_type(&self) -> &'static str { #types }
            fn event_version(&self) -> u32 { #versions }
        }
    })
}

/// `#[read_model(...)]` of the struct.
#[derive(Default)]
struct ModelAttr {
    collection: Option<LitStr>,
    database: Option<LitStr>,
    indexes: Option<Path>,
}

fn read_model(input: &DeriveInput) -> syn::Result<Tokens> {
    let ident = &input.ident;
    let mut attr = ModelAttr::default();
    for a in input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("read_model"))
    {
        a.parse_nested_meta(|meta| {
            if meta.path.is_ident("collection") {
                attr.collection = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("database") {
                attr.database = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("indexes") {
                attr.indexes = Some(meta.value()?.parse()?);
            } else {
                return Err(meta.error("expected `collection`, `database` or `indexes`"));
            }
            Ok(())
        })?;
    }
    let collection = attr.collection.ok_or_else(|| {
        syn::Error::new_spanned(ident, "ReadModel needs #[read_model(collection = \"...\")]")
    })?;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            ident,
            "ReadModel: derive it on a struct",
        ));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(
            ident,
            "ReadModel: the struct needs named fields",
        ));
    };
    let marked = fields.named.iter().find(|f| has_id_marker(&f.attrs));
    let serde_id = fields.named.iter().find(|f| renamed_to_id(&f.attrs));
    let named = fields
        .named
        .iter()
        .find(|f| f.ident.as_ref().is_some_and(|i| i == "id" || i == "_id"));
    let id = marked.or(serde_id).or(named).ok_or_else(|| {
        syn::Error::new_spanned(
            ident,
            "ReadModel: no id field (mark one with #[read_model(id)] or serialize it as `_id`)",
        )
    })?;
    let (id_ident, id_ty) = (&id.ident, &id.ty);
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let database = attr.database.map(|db| {
        quote! { const DATABASE: ::core::option::Option<&'static str> = ::core::option::Option::Some(#db); }
    });
    let indexes = attr.indexes.map(|path| {
        quote! { fn indexes() -> ::std::vec::Vec<::cqrs_mongo::IndexModel> { #path() } }
    });
    Ok(quote! {
        impl #impl_generics ::cqrs_core::ReadModel for #ident #ty_generics #where_clause {
            type Id = #id_ty;
            const COLLECTION: &'static str = #collection;
            fn id(&self) -> Self::Id { ::core::clone::Clone::clone(&self.#id_ident) }
        }
        impl #impl_generics ::cqrs_mongo::MongoReadModel for #ident #ty_generics #where_clause {
            #database
            #indexes
        }
    })
}

fn has_id_marker(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("read_model"))
        .any(|a| {
            let mut id = false;
            let _ = a.parse_nested_meta(|meta| {
                id |= meta.path.is_ident("id");
                Ok(())
            });
            id
        })
}

/// True for a field with `#[serde(rename = "_id")]`.
fn renamed_to_id(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .any(|a| {
            let mut id = false;
            let _ = a.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    let value: LitStr = meta.value()?.parse()?;
                    id |= value.value() == "_id";
                } else if meta.input.peek(syn::Token![=]) {
                    // skip other `key = value` pairs
                    let _: syn::Expr = meta.value()?.parse()?;
                }
                Ok(())
            });
            id
        })
}
