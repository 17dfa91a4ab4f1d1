//! `#[service]`: an rpcx service from a trait, with its registration and a typed client
//! stub. Re-exported by every runtime crate (`#[rpcx_tokio::service]`,
//! `#[rpcx_smol::service]`, `#[rpcx_std::service]`); see the runtime crates' docs for
//! examples.
//!
//! ```ignore
//! #[rpcx_tokio::service(name = "Arith")]
//! pub trait Arith {
//!     async fn mul(&self, ctx: &Context, args: Args) -> Result<Reply, ServiceError>;
//!     #[rpcx(name = "Add")]
//!     async fn plus(&self, args: Args) -> Result<Reply, ServiceError>;
//!     #[rpcx(proto)]
//!     async fn mul_proto(&self, args: ProtoArgs) -> Result<ProtoReply, ServiceError>;
//! }
//! ```
//!
//! gives
//!
//! * the trait, its `async fn`s declared as `fn .. -> impl Future<Output = ..> + Send`
//!   (implement them with `async fn` as written), plus a provided
//!   `fn into_service(self) -> Service` registering every method under its Go name
//!   (`mul` -> `Mul`, `get_user` -> `GetUser`; `#[rpcx(name = "..")]` overrides);
//! * `ArithClient<C>`: `ArithClient::new(client)` over any `Client` or `XClient` (or a
//!   reference or `Arc` of one); `client.mul(args)` returns a call with the request
//!   builders' setters, sent by `.await` (tokio, smol) or `.call()` (std).
//!
//! Arguments and replies are serde types (sent with the client's serialize type), prost
//! messages with `#[rpcx(proto)]` (sent as Protobuf), or types that are both with
//! `#[rpcx(serde, proto)]` (the server answers every serialize type; the stub sends the
//! client's).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Error, FnArg, Ident, ItemTrait, LitStr, Pat, ReturnType, Token, TraitItem, TraitItemFn, Type, parse_macro_input,
};

/// Options of the attribute: `name = "Arith"`, `crate = "rpcx_tokio::core"`.
struct ServiceArgs {
    name: Option<LitStr>,
    krate: Option<syn::Path>,
}

impl Parse for ServiceArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut out = ServiceArgs { name: None, krate: None };
        let pairs = Punctuated::<syn::MetaNameValue, Token![,]>::parse_terminated(input)?;
        for nv in pairs {
            let lit = match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => s.clone(),
                other => return Err(Error::new(other.span(), "expected a string literal")),
            };
            if nv.path.is_ident("name") {
                out.name = Some(lit);
            } else if nv.path.is_ident("crate") {
                out.krate = Some(lit.parse()?);
            } else {
                return Err(Error::new(nv.path.span(), "unknown option: expected `name` or `crate`"));
            }
        }
        Ok(out)
    }
}

/// A service trait: register its methods and write a client stub. See the crate docs.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(attr as ServiceArgs);
    let tr = parse_macro_input!(item as ItemTrait);
    let original = tr.clone();
    match expand(args, tr) {
        Ok(t) => t.into(),
        // The trait as written stays, so the one error is all the user sees.
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(strip_rpcx_attrs(original));
            out.into()
        }
    }
}

/// The trait without the `#[rpcx(..)]` method attributes (which only this attribute
/// understands).
fn strip_rpcx_attrs(mut tr: ItemTrait) -> TokenStream2 {
    for item in &mut tr.items {
        if let TraitItem::Fn(f) = item {
            f.attrs.retain(|a| !a.path().is_ident("rpcx"));
        }
    }
    quote!(#tr)
}

/// One method as the attribute understood it.
struct Method {
    ident: Ident,
    wire_name: String,
    has_ctx: bool,
    args: Type,
    reply: Type,
    codec: Codec,
}

/// Go's name for a Rust method: `get_user` -> `GetUser`.
fn go_name(rust: &str) -> String {
    rust.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

/// The path of rpcx-core as the calling crate sees it: itself, or through the runtime
/// crate it depends on.
fn core_path() -> syn::Result<TokenStream2> {
    use proc_macro_crate::{FoundCrate, crate_name};
    if let Ok(found) = crate_name("rpcx-core") {
        return Ok(match found {
            FoundCrate::Itself => quote!(crate),
            FoundCrate::Name(n) => {
                let id = Ident::new(&n, Span::call_site());
                quote!(::#id)
            }
        });
    }
    for runtime in ["rpcx-tokio", "rpcx-smol", "rpcx-std", "rpcx-async"] {
        if let Ok(found) = crate_name(runtime) {
            return Ok(match found {
                FoundCrate::Itself => quote!(crate::core),
                FoundCrate::Name(n) => {
                    let id = Ident::new(&n, Span::call_site());
                    quote!(::#id::core)
                }
            });
        }
    }
    Err(Error::new(
        Span::call_site(),
        "rpcx service: no rpcx crate among the dependencies (rpcx-tokio, rpcx-smol, rpcx-std or rpcx-core); \
         name one with #[service(crate = \"path::to::rpcx_core\")]",
    ))
}

/// How a method's arguments and reply are encoded.
#[derive(Clone, Copy, PartialEq)]
enum Codec {
    /// serde types (JSON, MsgPack): the default.
    Serde,
    /// prost messages (Protobuf): `#[rpcx(proto)]`.
    Proto,
    /// Types that are both: every serialize type: `#[rpcx(serde, proto)]`.
    Any,
}

/// Take `#[rpcx(name = "..")]` / `#[rpcx(proto)]` / `#[rpcx(serde, proto)]` off a method.
fn method_options(f: &mut TraitItemFn) -> syn::Result<(Option<String>, Codec)> {
    let mut name = None;
    let mut proto = false;
    let mut serde = false;
    let mut err = None;
    f.attrs.retain(|a| {
        if !a.path().is_ident("rpcx") {
            return true;
        }
        let r = a.parse_nested_meta(|m| {
            if m.path.is_ident("name") {
                name = Some(m.value()?.parse::<LitStr>()?.value());
                Ok(())
            } else if m.path.is_ident("proto") {
                proto = true;
                Ok(())
            } else if m.path.is_ident("serde") {
                serde = true;
                Ok(())
            } else {
                Err(m.error("unknown rpcx option: expected `name = \"..\"`, `proto` or `serde`"))
            }
        });
        if let Err(e) = r {
            err = Some(e);
        }
        false
    });
    let codec = match (serde, proto) {
        (true, true) => Codec::Any,
        (false, true) => Codec::Proto,
        _ => Codec::Serde,
    };
    match err {
        Some(e) => Err(e),
        None => Ok((name, codec)),
    }
}

/// `Result<R, E>` -> `R` (the error type must be `ServiceError`, checked by the
/// compiler against the registration).
fn reply_type(ret: &ReturnType, span: Span) -> syn::Result<Type> {
    let msg = "an rpcx method returns `Result<Reply, ServiceError>`";
    let ReturnType::Type(_, ty) = ret else { return Err(Error::new(span, msg)) };
    let Type::Path(p) = &**ty else { return Err(Error::new(ty.span(), msg)) };
    let last = p.path.segments.last().ok_or_else(|| Error::new(ty.span(), msg))?;
    if last.ident != "Result" {
        return Err(Error::new(ty.span(), msg));
    }
    let syn::PathArguments::AngleBracketed(a) = &last.arguments else { return Err(Error::new(ty.span(), msg)) };
    let mut types = a.args.iter().filter_map(|g| match g {
        syn::GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    match (types.next(), types.next()) {
        (Some(r), Some(_)) => Ok(r),
        _ => Err(Error::new(ty.span(), msg)),
    }
}

fn parse_method(f: &mut TraitItemFn) -> syn::Result<Method> {
    let (name, codec) = method_options(f)?;
    let sig = &f.sig;
    let shape = "an rpcx method is `async fn name(&self, [ctx: &Context,] args: Args) -> Result<Reply, ServiceError>`";
    if sig.asyncness.is_none() {
        return Err(Error::new(sig.fn_token.span(), format!("not async: {shape}")));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new(sig.generics.span(), format!("no generics: {shape}")));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(other) => return Err(Error::new(other.span(), format!("takes `&self`: {shape}"))),
        None => return Err(Error::new(sig.span(), format!("takes `&self`: {shape}"))),
    }
    let typed: Vec<&syn::PatType> = inputs
        .map(|a| match a {
            FnArg::Typed(t) => Ok(t),
            FnArg::Receiver(r) => Err(Error::new(r.span(), shape)),
        })
        .collect::<syn::Result<_>>()?;
    let (has_ctx, args) = match typed.as_slice() {
        [args] => (false, &args.ty),
        [ctx, args] => {
            if !matches!(&*ctx.ty, Type::Reference(_)) {
                return Err(Error::new(ctx.ty.span(), format!("the context is taken by reference: {shape}")));
            }
            (true, &args.ty)
        }
        [] => return Err(Error::new(sig.span(), format!("one argument: {shape}"))),
        [.., extra] => return Err(Error::new(extra.span(), format!("at most a context and one argument: {shape}"))),
    };
    for t in &typed {
        if !matches!(&*t.pat, Pat::Ident(_) | Pat::Wild(_)) {
            return Err(Error::new(t.pat.span(), "name the argument (no patterns)"));
        }
    }
    let reply = reply_type(&sig.output, sig.span())?;
    let wire_name = name.unwrap_or_else(|| go_name(&sig.ident.to_string()));
    Ok(Method { ident: sig.ident.clone(), wire_name, has_ctx, args: (**args).clone(), reply, codec })
}

fn expand(opts: ServiceArgs, mut tr: ItemTrait) -> syn::Result<TokenStream2> {
    let core = match opts.krate {
        Some(p) => quote!(#p),
        None => core_path()?,
    };
    let service_name = opts.name.map(|n| n.value()).unwrap_or_else(|| tr.ident.to_string());
    let mut methods = Vec::new();
    for item in &mut tr.items {
        let TraitItem::Fn(f) = item else { continue };
        if f.default.is_some() {
            return Err(Error::new(f.sig.span(), "rpcx service methods have no default body"));
        }
        let m = parse_method(f)?;
        // `async fn` -> `fn .. -> impl Future<Output = ..> + Send` (the registration
        // needs Send futures; an impl may still write `async fn`).
        let out = match &f.sig.output {
            ReturnType::Type(_, t) => (**t).clone(),
            ReturnType::Default => unreachable!("checked by parse_method"),
        };
        f.sig.asyncness = None;
        f.sig.output = syn::parse_quote!(-> impl ::std::future::Future<Output = #out> + ::std::marker::Send);
        methods.push(m);
    }
    if methods.is_empty() {
        return Err(Error::new(tr.ident.span(), "an rpcx service trait has at least one method"));
    }
    let vis = &tr.vis;
    let trait_ident = &tr.ident;
    let client_ident = format_ident!("{}Client", trait_ident);

    let registrations = methods.iter().map(|m| {
        let ident = &m.ident;
        let wire = &m.wire_name;
        let args_ty = &m.args;
        let call = if m.has_ctx { quote!(this.#ident(&ctx, args).await) } else { quote!(this.#ident(args).await) };
        let register = match m.codec {
            Codec::Serde => quote!(method),
            Codec::Proto => quote!(proto_method),
            Codec::Any => quote!(method_with_proto),
        };
        quote! {
            let service = {
                let this = this.clone();
                service.#register(#wire, move |ctx: #core::service::Context, args: #args_ty| {
                    let this = this.clone();
                    async move {
                        let _ = &ctx;
                        #call
                    }
                })
            };
        }
    });
    let into_service = quote! {
        /// This implementation as an rpcx service (every method under its Go name), for
        /// `Router::service`.
        fn into_service(self) -> #core::service::Service
        where
            Self: ::std::marker::Sized + ::std::marker::Send + ::std::marker::Sync + 'static,
        {
            let this = ::std::sync::Arc::new(self);
            let service = #core::service::Service::new(#service_name);
            #(#registrations)*
            let _ = this;
            service
        }
    };
    tr.items.push(syn::parse2(into_service)?);

    let stub_methods = methods.iter().map(|m| {
        let ident = &m.ident;
        let wire = &m.wire_name;
        let args_ty = &m.args;
        let reply_ty = &m.reply;
        let codec = match m.codec {
            Codec::Serde => quote!(#core::stub::Serde),
            Codec::Proto => quote!(#core::stub::Proto),
            Codec::Any => quote!(#core::stub::Any),
        };
        let doc = format!("Call `{service_name}.{wire}`: set per-call options, then `.await` it (or `.call()` it on a blocking client).");
        quote! {
            #[doc = #doc]
            #vis fn #ident(&self, args: #args_ty) -> #core::stub::StubCall<'_, C, #args_ty, #reply_ty, #codec> {
                #core::stub::StubCall::new(&self.client, #service_name, #wire, args)
            }
        }
    });
    let client_doc = format!(
        "Typed client of the `{service_name}` service, over any rpcx `Client` or `XClient` (or a reference or `Arc` of one)."
    );
    Ok(quote! {
        #tr

        #[doc = #client_doc]
        #[derive(Debug, Clone)]
        #[allow(dead_code)]
        #vis struct #client_ident<C> {
            client: C,
        }

        // A generated API: the methods a program does not call are not dead code to it.
        #[allow(dead_code)]
        impl<C: #core::stub::CallClient> #client_ident<C> {
            /// A stub calling through `client`.
            #vis fn new(client: C) -> Self {
                Self { client }
            }

            /// The client underneath.
            #vis fn inner(&self) -> &C {
                &self.client
            }

            #(#stub_methods)*
        }
    })
}

#[cfg(test)]
mod tests {
    use super::go_name;

    #[test]
    fn method_names_are_go_pascal_case() {
        assert_eq!(go_name("mul"), "Mul");
        assert_eq!(go_name("get_user_by_id"), "GetUserById");
        assert_eq!(go_name("_private"), "Private");
        assert_eq!(go_name("already_Pascal"), "AlreadyPascal");
    }
}
