//! The default TLS configuration (feature `tls`): rustls with a *ring* crypto provider that
//! this module assembles from rustls' public parts.
//!
//! rustls 0.23.48 deprecated `rustls::crypto::ring::default_provider` (*ring* has no
//! post-quantum key exchange), and `ClientConfig::builder()` panics when no process-wide
//! provider is installed and the build enables both *ring* and aws-lc-rs (as a user's other
//! dependencies may). So the provider is built here, from items that every rustls 0.23.x
//! exports undeprecated: the same cipher suites, key exchange groups and signature algorithms
//! as rustls' own *ring* provider.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::crypto::ring as suites;
use rustls::crypto::{CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use webpki::ring as algs;

/// The client configuration [`HttpClient::new`](super::HttpClient::new) uses: TLS 1.2 and
/// 1.3 on *ring*, the Mozilla roots of `webpki-roots`, no client certificate.
pub(crate) fn default_config() -> rustls::ClientConfig {
    use hyper_rustls::ConfigBuilderExt as _;

    #[allow(clippy::expect_used)] // reason: a fixed provider that supports both versions
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_webpki_roots()
        .with_no_client_auth();
    config
}

/// rustls' *ring* provider: its default cipher suites and key exchange groups, webpki's
/// *ring* signature algorithms, *ring*'s system random source and key loader.
pub(crate) fn ring_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: suites::DEFAULT_CIPHER_SUITES.to_vec(),
        kx_groups: suites::DEFAULT_KX_GROUPS.to_vec(),
        signature_verification_algorithms: SIGNATURE_ALGORITHMS,
        secure_random: &Ring,
        key_provider: &Ring,
    }
}

/// The signature algorithms rustls' *ring* provider verifies, in its order.
static SIGNATURE_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        algs::ECDSA_P256_SHA256,
        algs::ECDSA_P256_SHA384,
        algs::ECDSA_P384_SHA256,
        algs::ECDSA_P384_SHA384,
        algs::ED25519,
        algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        algs::RSA_PKCS1_2048_8192_SHA256,
        algs::RSA_PKCS1_2048_8192_SHA384,
        algs::RSA_PKCS1_2048_8192_SHA512,
        algs::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        algs::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        algs::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    // In TLS 1.2 a signature scheme does not fix the curve; in TLS 1.3 it does.
    mapping: &[
        (SignatureScheme::ECDSA_NISTP384_SHA384, &[algs::ECDSA_P384_SHA384, algs::ECDSA_P256_SHA384]),
        (SignatureScheme::ECDSA_NISTP256_SHA256, &[algs::ECDSA_P256_SHA256, algs::ECDSA_P384_SHA256]),
        (SignatureScheme::ED25519, &[algs::ED25519]),
        (SignatureScheme::RSA_PSS_SHA512, &[algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
        (SignatureScheme::RSA_PSS_SHA384, &[algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
        (SignatureScheme::RSA_PSS_SHA256, &[algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
        (SignatureScheme::RSA_PKCS1_SHA512, &[algs::RSA_PKCS1_2048_8192_SHA512]),
        (SignatureScheme::RSA_PKCS1_SHA384, &[algs::RSA_PKCS1_2048_8192_SHA384]),
        (SignatureScheme::RSA_PKCS1_SHA256, &[algs::RSA_PKCS1_2048_8192_SHA256]),
    ],
};

/// *ring*'s random source and private key loader.
#[derive(Debug)]
struct Ring;

impl SecureRandom for Ring {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new().fill(buf).map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for Ring {
    fn load_private_key(&self, key_der: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        suites::sign::any_supported_type(&key_der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_matches_the_one_rustls_builds_for_ring() {
        // The deprecated constructor is the reference this module copies.
        #[allow(deprecated)]
        let reference = suites::default_provider();
        let provider = ring_provider();
        let names = |provider: &CryptoProvider| {
            let suites = provider.cipher_suites.iter().map(|suite| suite.suite()).collect::<Vec<_>>();
            let groups = provider.kx_groups.iter().map(|group| group.name()).collect::<Vec<_>>();
            (suites, groups)
        };
        assert_eq!(names(&provider), names(&reference));
        let (ours, theirs) =
            (&provider.signature_verification_algorithms, &reference.signature_verification_algorithms);
        assert_eq!(ours.supported_schemes(), theirs.supported_schemes());
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        assert_eq!(ours.all.len(), theirs.all.len());
        for ((scheme, algs), (their_scheme, their_algs)) in ours.mapping.iter().zip(theirs.mapping) {
            assert_eq!((scheme, algs.len()), (their_scheme, their_algs.len()));
        }
        assert_eq!(provider.fips(), reference.fips());
    }

    #[test]
    fn the_random_source_fills_the_buffer() {
        let mut bytes = [0_u8; 32];
        ring_provider().secure_random.fill(&mut bytes).unwrap();
        assert_ne!(bytes, [0; 32]);
    }

    #[test]
    fn the_default_config_uses_the_ring_provider() {
        let config = default_config();
        assert_eq!(config.crypto_provider().cipher_suites.len(), suites::DEFAULT_CIPHER_SUITES.len());
    }
}
