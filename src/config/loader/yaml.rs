//! Checks of the YAML text itself, made with yaml-rust2's event parser and scanner rather than
//! the tree: nesting depth before the tree is built (the tree is recursive), and the bracket
//! that was never closed after a syntax error (the parser reports where it gave up, which is
//! often lines later).

/// The deepest nesting of mappings and sequences accepted. A configuration needs five levels
/// (targets, host, services, service, an option's mapping); the YAML tree is built and walked
/// recursively, so without a limit a few kilobytes of `- - - -` would overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// Where nesting first goes beyond [`MAX_DEPTH`], if it does. Reads the text with
/// yaml-rust2's event parser, which keeps its state on the heap and needs no recursion; a
/// syntax error stops the check and is reported by the real parse.
pub(super) fn too_deep(text: &str) -> Option<(usize, usize)> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        match parser.next_token() {
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), mark)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some((mark.line(), mark.col() + 1));
                }
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            Ok((Event::StreamEnd, _)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The innermost flow collection (`[` or `{`) still open where the parser failed, at `error`
/// (line, 1-based column), and where it was opened; `None` unless that bracket is never closed
/// anywhere in the rest of the text. Only run on the error path: it scans the text again with
/// yaml-rust2's scanner (no recursion), which marks brackets exactly, and then counts brackets
/// in the raw text after the opening one.
pub(super) fn unclosed_bracket(
    text: &str,
    error: (usize, usize),
) -> Option<(char, (usize, usize))> {
    use yaml_rust2::scanner::{Scanner, TokenType};
    let mut open: Vec<(char, usize, (usize, usize))> = Vec::new();
    for token in Scanner::new(text.chars()) {
        let mark = token.0;
        let at = (mark.line(), mark.col() + 1);
        if at >= error {
            break;
        }
        match token.1 {
            TokenType::FlowSequenceStart => open.push(('[', mark.index(), at)),
            TokenType::FlowMappingStart => open.push(('{', mark.index(), at)),
            TokenType::FlowSequenceEnd | TokenType::FlowMappingEnd => {
                open.pop();
            }
            _ => {}
        }
    }
    let (bracket, index, at) = open.pop()?;
    let rest = text.chars().skip(index);
    (!closes(rest)).then_some((bracket, at))
}

/// Whether the bracket `rest` starts with is matched later, counting nested brackets and
/// skipping quoted strings and comments.
pub(super) fn closes(rest: impl Iterator<Item = char>) -> bool {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut previous = ' ';
    let mut escaped = false;
    for c in rest {
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if q == '"' && c == '\\' && !escaped {
                escaped = true;
                previous = c;
                continue;
            }
            // `''` inside single quotes closes and reopens, which counts the same.
            if c == q && !escaped {
                quote = None;
            }
        } else {
            let after_space = previous.is_whitespace() || "[{,:".contains(previous);
            match c {
                '#' if previous.is_whitespace() => comment = true,
                '"' | '\'' if after_space => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return true;
                    }
                }
                _ => {}
            }
        }
        escaped = false;
        previous = c;
    }
    false
}
