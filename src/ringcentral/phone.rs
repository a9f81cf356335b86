//! North American phone numbers to E.164 (`+1NXXNXXXXXX`), for SMS and fax destinations.
//!
//! OSCAR keeps phone numbers as typed (`(604) 555-0100`, `604-555-0100 ext 2`, `1.604.555.0100`).
//! [`to_e164`] accepts the usual punctuation and an optional leading `1` or `+1`, and refuses
//! anything that is not a dialable NANP number: a wrong length, an area code or exchange
//! starting with 0 or 1, an N11 service code as area code, an extension (an SMS cannot reach
//! one), letters, or another country code. Errors name the rule, never the number (PHI).

/// Why a number cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("no phone number")]
    Empty,
    #[error("the phone number contains letters or symbols")]
    BadCharacters,
    #[error("the phone number has an extension")]
    Extension,
    #[error("the phone number is not a North American (+1) number")]
    NotNorthAmerican,
    #[error("the phone number does not have 10 digits")]
    BadLength,
    #[error("the phone number's area code is not valid")]
    BadAreaCode,
    #[error("the phone number's exchange code is not valid")]
    BadExchange,
}

/// Normalises a North American number to E.164.
pub fn to_e164(input: &str) -> Result<String, PhoneError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(PhoneError::Empty);
    }
    let lower = s.to_ascii_lowercase();
    if lower.contains("ext")
        || lower.contains('x')
        || lower.contains('#')
        || lower.contains(',')
        || lower.contains(';')
    {
        return Err(PhoneError::Extension);
    }
    let mut digits = String::new();
    let mut plus = false;
    for (i, c) in s.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return Err(PhoneError::BadCharacters),
        }
    }
    let national = match (plus, digits.len()) {
        (_, 11) if digits.starts_with('1') => &digits[1..],
        (true, _) if !digits.starts_with('1') => return Err(PhoneError::NotNorthAmerican),
        (false, 10) => &digits[..],
        (false, n) if n > 11 && digits.starts_with("011") => {
            return Err(PhoneError::NotNorthAmerican)
        }
        _ => return Err(PhoneError::BadLength),
    };
    let b = national.as_bytes();
    if !(b'2'..=b'9').contains(&b[0]) || (b[1] == b'1' && b[2] == b'1') {
        return Err(PhoneError::BadAreaCode);
    }
    if !(b'2'..=b'9').contains(&b[3]) {
        return Err(PhoneError::BadExchange);
    }
    Ok(format!("+1{national}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_oscar_spellings_normalise() {
        for s in [
            "604-555-0100",
            "(604) 555-0100",
            "604.555.0100",
            "6045550100",
            "1-604-555-0100",
            "+1 604 555 0100",
            "+16045550100",
            " 1 (604) 555 0100 ",
        ] {
            assert_eq!(to_e164(s), Ok("+16045550100".to_string()), "{s}");
        }
    }

    #[test]
    fn unusable_numbers_are_refused_with_a_reason() {
        assert_eq!(to_e164(""), Err(PhoneError::Empty));
        assert_eq!(to_e164("604-555-0100 ext 12"), Err(PhoneError::Extension));
        assert_eq!(to_e164("604 555 0100 x3"), Err(PhoneError::Extension));
        assert_eq!(to_e164("555-0100"), Err(PhoneError::BadLength));
        assert_eq!(
            to_e164("+44 20 7946 0958"),
            Err(PhoneError::NotNorthAmerican)
        );
        assert_eq!(
            to_e164("011 44 20 7946 0958"),
            Err(PhoneError::NotNorthAmerican)
        );
        assert_eq!(to_e164("104-555-0100"), Err(PhoneError::BadAreaCode));
        assert_eq!(to_e164("911-555-0100"), Err(PhoneError::BadAreaCode));
        assert_eq!(to_e164("604-155-0100"), Err(PhoneError::BadExchange));
        assert_eq!(to_e164("604-CALL-NOW"), Err(PhoneError::BadCharacters));
        assert_eq!(to_e164("2-604-555-0100"), Err(PhoneError::BadLength));
        // The error text never carries the number.
        assert!(!PhoneError::BadLength.to_string().contains("555"));
    }

    fn valid_national() -> impl Strategy<Value = String> {
        ("[2-9][0-9][0-9]", "[2-9][0-9][0-9]", "[0-9]{4}")
            .prop_filter("no N11 area code", |(a, _, _)| &a[1..] != "11")
            .prop_map(|(a, e, l)| format!("{a}{e}{l}"))
    }

    proptest! {
        /// Every usual spelling of a valid number gives the same E.164 form.
        #[test]
        fn spellings_of_one_number_agree(n in valid_national(), style in 0usize..6) {
            let (a, e, l) = (&n[..3], &n[3..6], &n[6..]);
            let spelled = match style {
                0 => n.clone(),
                1 => format!("({a}) {e}-{l}"),
                2 => format!("{a}.{e}.{l}"),
                3 => format!("1-{a}-{e}-{l}"),
                4 => format!("+1 {a} {e} {l}"),
                _ => format!("+1{n}"),
            };
            prop_assert_eq!(to_e164(&spelled), Ok(format!("+1{n}")));
        }

        /// Whatever the input, the output is a well-formed NANP E.164 number or an error.
        #[test]
        fn output_is_always_well_formed(s in "[0-9+() .x-]{0,20}") {
            if let Ok(e) = to_e164(&s) {
                let b = e.as_bytes();
                prop_assert_eq!(e.len(), 12);
                prop_assert!(e.starts_with("+1"));
                prop_assert!(b[2..].iter().all(u8::is_ascii_digit));
                prop_assert!((b'2'..=b'9').contains(&b[2]) && (b'2'..=b'9').contains(&b[5]));
            }
        }
    }
}
