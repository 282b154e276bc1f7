//! The load generator's tenants: a pure function of (companies, numbers per company), so that
//! `seed` and `run` agree on every number and secret without sharing a file.

use callgate_contract::{E164, Provider};

/// Provider of number `k` of a company: numbers are spread round-robin over the three.
const PROVIDERS: [Provider; 3] = [Provider::Retell, Provider::Vapi, Provider::Twilio];
/// First number: +1 200 000 0000, then consecutive (NANP-shaped, never a real subscriber plan).
const FIRST_NUMBER: u64 = 2_000_000_000;

#[derive(Debug, Clone)]
pub struct Model {
    pub companies: u32,
    pub per_company: u32,
    /// What the seeded Twilio accounts are configured with (signatures cover it).
    pub twilio_public_url: String,
}

impl Model {
    pub fn new(companies: u32, per_company: u32, twilio_public_url: &str) -> Result<Self, String> {
        if companies == 0 || per_company < 3 {
            return Err("at least one company with at least three numbers (one per provider)".into());
        }
        if u64::from(companies) * u64::from(per_company) > 10_000_000 {
            return Err("at most ten million numbers".into());
        }
        Ok(Self { companies, per_company, twilio_public_url: twilio_public_url.to_owned() })
    }

    pub fn numbers(&self) -> u64 {
        u64::from(self.companies) * u64::from(self.per_company)
    }

    pub fn slug(company: u32) -> String {
        format!("lt-{company}")
    }

    pub fn provider(k: u32) -> Provider {
        PROVIDERS[(k % 3) as usize]
    }

    pub fn number(&self, company: u32, k: u32) -> E164 {
        let index = u64::from(company) * u64::from(self.per_company) + u64::from(k);
        E164::parse(&format!("+1{}", FIRST_NUMBER + index)).expect("the model's numbers are E.164")
    }

    /// The signing secret of a company's account with `provider` (load-test tenants only).
    pub fn secret(company: u32, provider: Provider) -> String {
        format!("lt-{provider}-secret-{company}")
    }

    pub fn calcom_key(company: u32) -> String {
        format!("cal_lt_{company}")
    }

    /// One Cal.com event type (and host) per company, so companies never share slots.
    pub fn event_type(company: u32) -> i64 {
        10_000 + i64::from(company)
    }

    /// Number `k` of `company` served by `provider`, for a random pick `r`.
    pub fn pick(&self, company: u32, provider: Provider, r: u32) -> E164 {
        let offset = PROVIDERS.iter().position(|p| *p == provider).unwrap_or(0) as u32;
        let slots = self.per_company.div_ceil(3);
        let mut k = (r % slots) * 3 + offset;
        if k >= self.per_company {
            k = offset;
        }
        self.number(company, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_distinct_and_picks_stay_with_their_provider() {
        let model = Model::new(3, 10, "https://h").unwrap();
        let mut all: Vec<E164> =
            (0..3).flat_map(|c| (0..10).map(move |k| (c, k))).map(|(c, k)| model.number(c, k)).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 30);
        assert_eq!(model.number(0, 0).to_string(), "+12000000000");
        for r in 0..50 {
            for provider in PROVIDERS {
                let number = model.pick(2, provider, r);
                let k = (0..10).find(|k| model.number(2, *k) == number).unwrap();
                assert_eq!(Model::provider(k), provider);
            }
        }
        assert!(Model::new(1, 2, "x").is_err());
    }
}
