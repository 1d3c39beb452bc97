//! "Did you mean": the closest of the names a user could have meant, for an unknown process
//! name or config key.

/// The candidate closest to `word` by edit distance, if it is close enough to be a slip
/// (one edit per three letters, one to three).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|candidate| (distance(word, candidate), candidate))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, candidate)| candidate)
}

/// How many names are listed when none is close.
const LISTED: usize = 8;

/// Says a process name is unknown, suggesting the closest name or, when there are few,
/// listing them: "no process named `ech` (did you mean `echo`?)".
pub fn unknown_process<'a>(name: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    match closest(name, names.iter().copied()) {
        Some(close) => format!("no process named `{name}` (did you mean `{close}`?)"),
        None if names.is_empty() => format!("no process named `{name}`: the config declares none"),
        None if names.len() <= LISTED => format!("no process named `{name}` (the processes are {})", names.join(", ")),
        None => format!("no process named `{name}`"),
    }
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slips_are_matched_and_strangers_are_not() {
        let names = ["echo", "web", "worker", "start_secs", "start_retries"];
        let cases = [
            ("ech", Some("echo")),
            ("wrker", Some("worker")),
            ("start_sec", Some("start_secs")),
            ("start_retry", Some("start_retries")),
            ("wev", Some("web")),
            ("x", None),
            ("database", None),
        ];
        for (word, want) in cases {
            assert_eq!(closest(word, names), want, "{word}");
        }
    }

    #[test]
    fn an_unknown_process_is_named_with_a_suggestion_or_the_list() {
        assert_eq!(unknown_process("ech", ["echo", "web"]), "no process named `ech` (did you mean `echo`?)");
        assert_eq!(unknown_process("db", ["echo", "web"]), "no process named `db` (the processes are echo, web)");
        assert_eq!(unknown_process("db", []), "no process named `db`: the config declares none");
        let many: Vec<String> = (0..20).map(|i| format!("p{i}xyz")).collect();
        assert_eq!(unknown_process("db", many.iter().map(String::as_str)), "no process named `db`");
    }
}
