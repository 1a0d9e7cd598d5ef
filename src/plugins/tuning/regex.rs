//! The subset of RE2 syntax an allowlist of sysctl names needs, matched like Go's
//! `regexp.MatchString` (unanchored unless the pattern says `^`/`$`): literals, `.`, escapes
//! (`\.`, `\d`, `\w`, `\s` and their negations), classes `[a-z_]`/`[^...]` (with
//! `[:alpha:]`-style names), groups `(...)`/`(?:...)`, `|`, and the quantifiers `*`, `+`,
//! `?`, `{n}`, `{n,}`, `{n,m}` (a trailing `?` for laziness is accepted; it cannot change
//! whether a string matches). Anything else is a parse error rather than a silent mismatch.
//!
//! Matching runs a Pike VM over the compiled program, so its time is linear in the input and
//! no pattern can make it blow up.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexError(String);

impl fmt::Display for RegexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RE2's cap on counted repetition.
const MAX_REPEAT: u32 = 1000;
/// Keeps expanded counted repetitions from growing without bound.
const MAX_PROGRAM: usize = 100_000;

#[derive(Debug, Clone)]
enum Node {
    Empty,
    Class(Class),
    Start,
    End,
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

/// A set of characters: ranges, possibly negated.
#[derive(Debug, Clone)]
struct Class {
    ranges: Vec<(char, char)>,
    negated: bool,
}

impl Class {
    fn one(c: char) -> Class {
        Class {
            ranges: vec![(c, c)],
            negated: false,
        }
    }

    fn any_but_newline() -> Class {
        Class {
            ranges: vec![('\n', '\n')],
            negated: true,
        }
    }

    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

fn perl_class(letter: char) -> Option<Class> {
    let (ranges, negated): (Vec<(char, char)>, bool) = match letter {
        'd' => (vec![('0', '9')], false),
        'D' => (vec![('0', '9')], true),
        'w' => (vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')], false),
        'W' => (vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')], true),
        's' => (vec![('\t', '\n'), ('\x0c', '\r'), (' ', ' ')], false),
        'S' => (vec![('\t', '\n'), ('\x0c', '\r'), (' ', ' ')], true),
        _ => return None,
    };
    Some(Class { ranges, negated })
}

fn named_class(name: &str) -> Option<Vec<(char, char)>> {
    Some(match name {
        "alnum" => vec![('0', '9'), ('A', 'Z'), ('a', 'z')],
        "alpha" => vec![('A', 'Z'), ('a', 'z')],
        "digit" => vec![('0', '9')],
        "lower" => vec![('a', 'z')],
        "upper" => vec![('A', 'Z')],
        "space" => vec![('\t', '\r'), (' ', ' ')],
        "word" => vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')],
        "xdigit" => vec![('0', '9'), ('A', 'F'), ('a', 'f')],
        "punct" => vec![('!', '/'), (':', '@'), ('[', '`'), ('{', '~')],
        _ => return None,
    })
}

struct Parser<'a> {
    chars: Vec<char>,
    at: usize,
    pattern: &'a str,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> RegexError {
        RegexError(format!("error parsing regexp: {what}: `{}`", self.pattern))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.at += 1;
        c
    }

    fn alternation(&mut self, depth: usize) -> Result<Node, RegexError> {
        if depth > 100 {
            return Err(self.error("expression nests too deeply"));
        }
        let mut branches = vec![self.concat(depth)?];
        while self.peek() == Some('|') {
            self.at += 1;
            branches.push(self.concat(depth)?);
        }
        Ok(if branches.len() == 1 {
            branches.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alt(branches)
        })
    }

    fn concat(&mut self, depth: usize) -> Result<Node, RegexError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom(depth)?;
            items.push(self.quantified(atom)?);
        }
        Ok(Node::Concat(items))
    }

    fn atom(&mut self, depth: usize) -> Result<Node, RegexError> {
        let Some(c) = self.next() else {
            return Err(self.error("missing argument to repetition operator"));
        };
        Ok(match c {
            '.' => Node::Class(Class::any_but_newline()),
            '^' => Node::Start,
            '$' => Node::End,
            '(' => {
                if self.peek() == Some('?') {
                    if self.chars.get(self.at + 1) == Some(&':') {
                        self.at += 2;
                    } else {
                        return Err(self.error("unsupported group flags"));
                    }
                }
                let inner = self.alternation(depth + 1)?;
                if self.next() != Some(')') {
                    return Err(self.error("missing closing )"));
                }
                inner
            }
            ')' => return Err(self.error("unexpected )")),
            '[' => Node::Class(self.class()?),
            '*' | '+' | '?' => return Err(self.error("missing argument to repetition operator")),
            '\\' => Node::Class(self.escape(false)?),
            other => Node::Class(Class::one(other)),
        })
    }

    /// After a backslash: a Perl class, or an escaped punctuation character.
    fn escape(&mut self, in_class: bool) -> Result<Class, RegexError> {
        let Some(c) = self.next() else {
            return Err(self.error("trailing backslash at end of expression"));
        };
        if let Some(class) = perl_class(c) {
            return Ok(class);
        }
        let literal = match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'f' => '\x0c',
            'v' => '\x0b',
            c if c.is_ascii_punctuation() => c,
            '-' if in_class => '-',
            _ => return Err(self.error("invalid escape sequence")),
        };
        Ok(Class::one(literal))
    }

    fn class(&mut self) -> Result<Class, RegexError> {
        let mut class = Class {
            ranges: Vec::new(),
            negated: false,
        };
        if self.peek() == Some('^') {
            self.at += 1;
            class.negated = true;
        }
        let mut first = true;
        loop {
            let Some(c) = self.next() else {
                return Err(self.error("missing closing ]"));
            };
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = match c {
                '[' if self.peek() == Some(':') => {
                    let rest: String = self.chars[self.at..].iter().collect();
                    let Some(end) = rest.find(":]") else {
                        return Err(self.error("invalid character class range"));
                    };
                    let name = &rest[1..end];
                    let ranges = named_class(name)
                        .ok_or_else(|| self.error("invalid character class range"))?;
                    self.at += rest[..end + 2].chars().count();
                    class.ranges.extend(ranges);
                    continue;
                }
                '\\' => {
                    let escaped = self.escape(true)?;
                    if escaped.negated || escaped.ranges.len() != 1 || {
                        let (a, b) = escaped.ranges[0];
                        a != b
                    } {
                        // A Perl class inside brackets: add it whole (negated ones are not
                        // representable as ranges here).
                        if escaped.negated {
                            return Err(self.error("negated class escape inside brackets"));
                        }
                        class.ranges.extend(escaped.ranges);
                        continue;
                    }
                    escaped.ranges[0].0
                }
                c => c,
            };
            if self.peek() == Some('-') && self.chars.get(self.at + 1).is_some_and(|&n| n != ']') {
                self.at += 1;
                let hi = match self.next() {
                    Some('\\') => {
                        let escaped = self.escape(true)?;
                        match escaped.ranges.as_slice() {
                            [(a, b)] if a == b && !escaped.negated => *a,
                            _ => return Err(self.error("invalid character class range")),
                        }
                    }
                    Some(h) => h,
                    None => return Err(self.error("missing closing ]")),
                };
                if hi < lo {
                    return Err(self.error("invalid character class range"));
                }
                class.ranges.push((lo, hi));
            } else {
                class.ranges.push((lo, lo));
            }
        }
        Ok(class)
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, RegexError> {
        let mut node = atom;
        loop {
            let (min, max) = match self.peek() {
                Some('{') => match self.counted()? {
                    Some(bounds) => bounds,
                    // A `{` that does not start a repetition is a literal, as in RE2.
                    None => return Ok(node),
                },
                Some(op @ ('*' | '+' | '?')) => {
                    self.at += 1;
                    match op {
                        '*' => (0, None),
                        '+' => (1, None),
                        _ => (0, Some(1)),
                    }
                }
                _ => return Ok(node),
            };
            if matches!(node, Node::Start | Node::End) {
                // `^*` is legal in RE2 and means the same as `^`.
                continue;
            }
            if matches!(node, Node::Repeat { .. }) {
                return Err(self.error("invalid nested repetition operator"));
            }
            if self.peek() == Some('?') {
                self.at += 1;
            }
            node = Node::Repeat {
                node: Box::new(node),
                min,
                max,
            };
        }
    }

    /// `{n}`, `{n,}` or `{n,m}` at the cursor, consumed; None (cursor kept) if it is not one.
    fn counted(&mut self) -> Result<Option<(u32, Option<u32>)>, RegexError> {
        let rest: String = self.chars[self.at..].iter().collect();
        let Some(end) = rest.find('}') else {
            return Ok(None);
        };
        let body = &rest[1..end];
        let parse = |s: &str| -> Option<u32> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let bounds = match body.split_once(',') {
            None => parse(body).map(|n| (n, Some(n))),
            Some((lo, "")) => parse(lo).map(|n| (n, None)),
            Some((lo, hi)) => parse(lo).zip(parse(hi)).map(|(a, b)| (a, Some(b))),
        };
        let Some((min, max)) = bounds else {
            return Ok(None);
        };
        if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT || m < min) {
            return Err(self.error("invalid repeat count"));
        }
        self.at += rest[..=end].chars().count();
        Ok(Some((min, max)))
    }
}

#[derive(Debug, Clone)]
enum Inst {
    Char(Class),
    Split(usize, usize),
    Jmp(usize),
    Start,
    End,
    Match,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Regex {
    prog: Vec<Inst>,
}

impl Regex {
    pub fn new(pattern: &str) -> Result<Regex, RegexError> {
        let mut parser = Parser {
            chars: pattern.chars().collect(),
            at: 0,
            pattern,
        };
        let node = parser.alternation(0)?;
        if parser.at < parser.chars.len() {
            return Err(parser.error("unexpected )"));
        }
        let mut prog = Vec::new();
        compile(&node, &mut prog, pattern)?;
        prog.push(Inst::Match);
        Ok(Regex { prog })
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let mut current: Vec<usize> = Vec::new();
        let mut seen = vec![usize::MAX; self.prog.len()];
        for pos in 0..=chars.len() {
            // Unanchored: a new thread starts at every position.
            self.add(&mut current, &mut seen, 0, pos, chars.len());
            if current
                .iter()
                .any(|&pc| matches!(self.prog[pc], Inst::Match))
            {
                return true;
            }
            let Some(&c) = chars.get(pos) else {
                break;
            };
            let mut next = Vec::new();
            for &pc in &current {
                if let Inst::Char(class) = &self.prog[pc]
                    && class.matches(c)
                {
                    self.add(&mut next, &mut seen, pc + 1, pos + 1, chars.len());
                }
            }
            current = next;
        }
        false
    }

    /// Adds `pc` and everything reachable from it without reading a character.
    fn add(&self, list: &mut Vec<usize>, seen: &mut [usize], pc: usize, pos: usize, len: usize) {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if seen[pc] == pos {
                continue;
            }
            seen[pc] = pos;
            match self.prog[pc] {
                Inst::Jmp(to) => stack.push(to),
                Inst::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Inst::Start => {
                    if pos == 0 {
                        stack.push(pc + 1);
                    }
                }
                Inst::End => {
                    if pos == len {
                        stack.push(pc + 1);
                    }
                }
                Inst::Char(_) | Inst::Match => list.push(pc),
            }
        }
    }
}

fn compile(node: &Node, prog: &mut Vec<Inst>, pattern: &str) -> Result<(), RegexError> {
    if prog.len() > MAX_PROGRAM {
        return Err(RegexError(format!(
            "error parsing regexp: expression too large: `{pattern}`"
        )));
    }
    match node {
        Node::Empty => {}
        Node::Class(class) => prog.push(Inst::Char(class.clone())),
        Node::Start => prog.push(Inst::Start),
        Node::End => prog.push(Inst::End),
        Node::Concat(items) => {
            for item in items {
                compile(item, prog, pattern)?;
            }
        }
        Node::Alt(branches) => {
            let mut jumps = Vec::new();
            for (i, branch) in branches.iter().enumerate() {
                if i + 1 < branches.len() {
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, 0));
                    compile(branch, prog, pattern)?;
                    jumps.push(prog.len());
                    prog.push(Inst::Jmp(0));
                    let after = prog.len();
                    prog[split] = Inst::Split(split + 1, after);
                } else {
                    compile(branch, prog, pattern)?;
                }
            }
            let end = prog.len();
            for j in jumps {
                prog[j] = Inst::Jmp(end);
            }
        }
        Node::Repeat { node, min, max } => {
            for _ in 0..*min {
                compile(node, prog, pattern)?;
            }
            match max {
                None => {
                    // x*: L1: split L2, L3; L2: x; jmp L1; L3:
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, 0));
                    compile(node, prog, pattern)?;
                    prog.push(Inst::Jmp(split));
                    let after = prog.len();
                    prog[split] = Inst::Split(split + 1, after);
                }
                Some(max) => {
                    // Each optional copy: split into it or past all of them.
                    let mut splits = Vec::new();
                    for _ in *min..*max {
                        splits.push(prog.len());
                        prog.push(Inst::Split(0, 0));
                        compile(node, prog, pattern)?;
                    }
                    let end = prog.len();
                    for s in splits {
                        prog[s] = Inst::Split(s + 1, end);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Regex::new(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .is_match(text)
    }

    #[test]
    fn tuning_regex_literals_are_unanchored_like_go_match_string() {
        assert!(m("net.core", "net.core.somaxconn"));
        assert!(m("somaxconn", "net.core.somaxconn"));
        assert!(!m("^somaxconn", "net.core.somaxconn"));
        assert!(m("", "anything"));
        assert!(m("^$", ""));
        assert!(!m("^$", "x"));
    }

    #[test]
    fn tuning_regex_the_reference_test_allowlist() {
        // The allowlist of the reference's tuning tests.
        let list = [
            r"^net\.ipv4\.conf\.IFNAME\.[a-z_]*$",
            r"^net\.ipv4\.conf\.other\.[a-z_]*$",
            r"^net\.ipv4\.ping_group_range$",
        ];
        let allowed = |key: &str| list.iter().any(|p| m(p, key));
        assert!(allowed("net.ipv4.conf.IFNAME.arp_filter"));
        assert!(allowed("net.ipv4.conf.other.proxy_arp"));
        assert!(allowed("net.ipv4.ping_group_range"));
        assert!(!allowed("net.ipv4.conf.all.arp_filter"));
        assert!(!allowed("net.ipv4.ping_group_range2"));
        assert!(!allowed("net.ipv4xconf.IFNAME.arp_filter"));
    }

    #[test]
    fn tuning_regex_classes_groups_and_counts() {
        assert!(m(
            r"^net\.(ipv4|ipv6)\.conf\.[^.]+\.forwarding$",
            "net.ipv6.conf.eth0.forwarding"
        ));
        assert!(!m(
            r"^net\.(ipv4|ipv6)\.conf\.[^.]+\.forwarding$",
            "net.ipv6.conf.a.b.forwarding"
        ));
        assert!(m(r"^a{2,3}$", "aaa"));
        assert!(!m(r"^a{2,3}$", "aaaa"));
        assert!(m(r"^a{2}b?$", "aa"));
        assert!(m(r"^x{2,}$", "xxxxx"));
        assert!(m(r"^\d+\s\w+$", "42 ab_c"));
        assert!(m(r"^[[:digit:]-]+$", "1-2-3"));
        assert!(m(r"^(?:ab)+$", "ababab"));
        assert!(
            m(r"a{,2}", "a{,2}"),
            "a brace that is no repetition is literal"
        );
        assert!(m(r"^[a-c\]]+$", "ab]c"));
        assert!(m(r"^.*?x$", "abx"));
    }

    #[test]
    fn tuning_regex_pathological_patterns_stay_fast_and_bad_ones_fail() {
        assert!(!m(r"^(a*)*$", &format!("{}b", "a".repeat(5000))));
        for bad in [
            "(", "[a", "a**", "\\", "*a", "a{2,1}", "(?i)x", "\\q", "a{1001}", ")",
        ] {
            assert!(Regex::new(bad).is_err(), "{bad} should not parse");
        }
    }
}
