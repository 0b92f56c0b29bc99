using System.Globalization;
using System.Text;

namespace Kvq.Chat.Templates;

/// <summary>
/// Splits a Jinja template into text and tag tokens the way Jinja's lexer does with the settings Hugging Face
/// transformers renders chat templates with: trim_blocks and lstrip_blocks on, keep_trailing_newline off, newlines
/// normalised to "\n". Whitespace control (<c>{%-</c>, <c>-%}</c>, <c>{{-</c>, <c>-}}</c>, <c>{#-</c>, <c>-#}</c>,
/// <c>{%+</c>, <c>+%}</c>) is applied here, so the parser sees text already trimmed.
/// </summary>
internal sealed class TemplateLexer
{
    private readonly string _src;
    private readonly int[] _lineStarts;
    private readonly List<Token> _tokens = [];
    private int _pos;

    private TemplateLexer(string source)
    {
        // Jinja joins the source's lines with "\n" and drops one trailing newline (keep_trailing_newline=False).
        _src = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (_src.EndsWith('\n')) _src = _src[..^1];
        var starts = new List<int> { 0 };
        for (int i = 0; i < _src.Length; i++) if (_src[i] == '\n') starts.Add(i + 1);
        _lineStarts = [.. starts];
    }

    public static List<Token> Tokenize(string source)
    {
        var lexer = new TemplateLexer(source);
        lexer.Run();
        return lexer._tokens;
    }

    private SourcePos At(int pos)
    {
        int line = Array.BinarySearch(_lineStarts, pos);
        if (line < 0) line = ~line - 1;
        return new SourcePos(line + 1, pos - _lineStarts[line] + 1);
    }

    private void Run()
    {
        bool lineStarting = true;
        while (_pos < _src.Length)
        {
            int tag = NextTag(_pos);
            string text = _src[_pos..(tag < 0 ? _src.Length : tag)];
            if (tag < 0)
            {
                AddText(text, _pos);
                break;
            }
            char kind = _src[tag + 1];
            char modifier = tag + 2 < _src.Length ? _src[tag + 2] : '\0';
            if (modifier == '-') text = text.TrimEnd();
            else if (kind != '{' && modifier != '+') text = LstripBlock(text, lineStarting);
            AddText(text, _pos);

            if (kind == '#') Comment(tag, modifier);
            else if (kind == '%' && TryRaw(tag, modifier)) { }
            else Tag(tag, kind, modifier);
            lineStarting = _pos > 0 && _src[_pos - 1] == '\n';
        }
        _tokens.Add(new Token(TokenKind.End, "", At(_src.Length)));
    }

    private void AddText(string text, int start)
    {
        if (text.Length > 0) _tokens.Add(new Token(TokenKind.Text, text, At(start)));
    }

    private int NextTag(int from)
    {
        for (int i = _src.IndexOf('{', from); i >= 0 && i + 1 < _src.Length; i = _src.IndexOf('{', i + 1))
            if (_src[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>lstrip_blocks: spaces and tabs between the start of a line and a block or comment tag go.</summary>
    private static string LstripBlock(string text, bool lineStarting)
    {
        int lineStart = text.LastIndexOf('\n') + 1;
        if (lineStart == 0 && !lineStarting) return text;
        for (int i = lineStart; i < text.Length; i++)
            if (!char.IsWhiteSpace(text[i])) return text;
        return text[..lineStart];
    }

    /// <summary>After a closing tag: "-" strips all whitespace that follows, otherwise trim_blocks drops one newline
    /// after a block or comment ("+" keeps it).</summary>
    private void AfterClose(char modifier, bool block)
    {
        if (modifier == '-')
            while (_pos < _src.Length && char.IsWhiteSpace(_src[_pos])) _pos++;
        else if (block && modifier != '+' && _pos < _src.Length && _src[_pos] == '\n')
            _pos++;
    }

    private void Comment(int tag, char modifier)
    {
        int close = _src.IndexOf("#}", tag + 2, StringComparison.Ordinal);
        if (close < 0) throw At(tag).Syntax("comment opened with '{#' is never closed with '#}'");
        char closeModifier = close > tag + 2 ? _src[close - 1] : '\0';
        _pos = close + 2;
        AfterClose(closeModifier is '-' or '+' ? closeModifier : '\0', block: true);
    }

    /// <summary>{% raw %}...{% endraw %}: the text between is output as it is.</summary>
    private bool TryRaw(int tag, char modifier)
    {
        int p = tag + 2 + (modifier is '-' or '+' ? 1 : 0);
        p = SkipSpaces(p);
        if (!IsWordAt(p, "raw")) return false;
        int afterName = SkipSpaces(p + 3);
        int closeAt = CloseAt(afterName, out char openClose);
        if (closeAt < 0) throw At(p).Syntax("expected '%}' after 'raw'");
        int bodyStart = closeAt;
        if (openClose == '-') while (bodyStart < _src.Length && char.IsWhiteSpace(_src[bodyStart])) bodyStart++;
        else if (openClose != '+' && bodyStart < _src.Length && _src[bodyStart] == '\n') bodyStart++;
        for (int search = bodyStart; ;)
        {
            int end = NextTag(search);
            if (end < 0) throw At(tag).Syntax("'raw' block is never closed with '{% endraw %}'");
            if (_src[end + 1] == '%')
            {
                char m = end + 2 < _src.Length ? _src[end + 2] : '\0';
                int q = SkipSpaces(end + 2 + (m is '-' or '+' ? 1 : 0));
                if (IsWordAt(q, "endraw"))
                {
                    int endClose = CloseAt(SkipSpaces(q + 6), out char endModifier);
                    if (endClose < 0) throw At(q).Syntax("expected '%}' after 'endraw'");
                    string body = _src[bodyStart..end];
                    if (m == '-') body = body.TrimEnd();
                    AddText(body, bodyStart);
                    _pos = endClose;
                    AfterClose(endModifier, block: true);
                    return true;
                }
            }
            search = end + 2;
        }
    }

    private int SkipSpaces(int p)
    {
        while (p < _src.Length && char.IsWhiteSpace(_src[p])) p++;
        return p;
    }

    private bool IsWordAt(int p, string word) =>
        string.CompareOrdinal(_src, p, word, 0, word.Length) == 0 &&
        (p + word.Length >= _src.Length || !IsNameChar(_src[p + word.Length]));

    /// <summary>The position after "%}", "-%}" or "+%}" at <paramref name="p"/>, or -1.</summary>
    private int CloseAt(int p, out char modifier)
    {
        modifier = '\0';
        if (p < _src.Length && _src[p] is '-' or '+' && string.CompareOrdinal(_src, p + 1, "%}", 0, 2) == 0)
        {
            modifier = _src[p];
            return p + 3;
        }
        return string.CompareOrdinal(_src, p, "%}", 0, 2) == 0 ? p + 2 : -1;
    }

    private void Tag(int tag, char kind, char modifier)
    {
        bool block = kind == '%';
        _tokens.Add(new Token(block ? TokenKind.BlockStart : TokenKind.VarStart, block ? "{%" : "{{", At(tag)));
        _pos = tag + 2 + (modifier == '-' || (block && modifier == '+') ? 1 : 0);
        string close = block ? "%}" : "}}";
        int depth = 0; // open brackets: "}}" inside a dict literal does not close the tag
        while (true)
        {
            while (_pos < _src.Length && char.IsWhiteSpace(_src[_pos])) _pos++;
            if (_pos >= _src.Length)
                throw At(tag).Syntax($"tag opened with '{(block ? "{%" : "{{")}' is never closed with '{close}'");
            if (depth == 0)
            {
                char c = _src[_pos];
                bool modified = (c == '-' || (block && c == '+')) && string.CompareOrdinal(_src, _pos + 1, close, 0, 2) == 0;
                if (modified || string.CompareOrdinal(_src, _pos, close, 0, 2) == 0)
                {
                    _tokens.Add(new Token(block ? TokenKind.BlockEnd : TokenKind.VarEnd, close, At(_pos)));
                    _pos += modified ? 3 : 2;
                    AfterClose(modified ? c : '\0', block);
                    return;
                }
            }
            var token = Next();
            if (token.Kind == TokenKind.Operator)
            {
                if (token.Value is "(" or "[" or "{") depth++;
                else if (token.Value is ")" or "]" or "}") depth = Math.Max(0, depth - 1);
            }
            _tokens.Add(token);
        }
    }

    private static readonly string[] Operators =
        ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "=", "<", ">"];

    private Token Next()
    {
        int start = _pos;
        char c = _src[_pos];
        if (c is '\'' or '"') return new Token(TokenKind.String, ReadString(c), At(start));
        if (char.IsAsciiDigit(c)) return ReadNumber();
        if (IsNameStart(c))
        {
            while (_pos < _src.Length && IsNameChar(_src[_pos])) _pos++;
            return new Token(TokenKind.Name, _src[start.._pos], At(start));
        }
        foreach (var op in Operators)
            if (string.CompareOrdinal(_src, _pos, op, 0, op.Length) == 0)
            {
                _pos += op.Length;
                return new Token(TokenKind.Operator, op, At(start));
            }
        throw At(start).Syntax($"unexpected character '{c}'");
    }

    private static bool IsNameStart(char c) => char.IsAsciiLetter(c) || c == '_';
    private static bool IsNameChar(char c) => char.IsAsciiLetterOrDigit(c) || c == '_';

    private Token ReadNumber()
    {
        int start = _pos;
        bool isFloat = false;
        while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
        if (_pos + 1 < _src.Length && _src[_pos] == '.' && char.IsAsciiDigit(_src[_pos + 1]))
        {
            isFloat = true;
            _pos++;
            while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
        }
        if (_pos < _src.Length && _src[_pos] is 'e' or 'E')
        {
            int e = _pos + 1;
            if (e < _src.Length && _src[e] is '+' or '-') e++;
            if (e < _src.Length && char.IsAsciiDigit(_src[e]))
            {
                isFloat = true;
                _pos = e;
                while (_pos < _src.Length && char.IsAsciiDigit(_src[_pos])) _pos++;
            }
        }
        string text = _src[start.._pos].Replace("_", "");
        if (!isFloat && !long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out _))
            throw At(start).Syntax($"integer {text} is too large");
        return new Token(isFloat ? TokenKind.Float : TokenKind.Integer, text, At(start));
    }

    /// <summary>A string literal with Python's escapes; an unknown escape keeps its backslash, as Python does.</summary>
    private string ReadString(char quote)
    {
        int start = _pos++;
        var sb = new StringBuilder();
        while (true)
        {
            if (_pos >= _src.Length) throw At(start).Syntax("string literal is never closed");
            char c = _src[_pos++];
            if (c == quote) return sb.ToString();
            if (c != '\\') { sb.Append(c); continue; }
            if (_pos >= _src.Length) throw At(start).Syntax("string literal is never closed");
            char e = _src[_pos++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'v': sb.Append('\v'); break;
                case 'a': sb.Append('\a'); break;
                case '0': sb.Append('\0'); break;
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case '\n': break; // a backslash at the end of a line continues the string
                case 'x': sb.Append(Hex(2, start)); break;
                case 'u': sb.Append(Hex(4, start)); break;
                case 'U': sb.Append(Hex(8, start)); break;
                default: sb.Append('\\').Append(e); break;
            }
        }
    }

    private string Hex(int digits, int literalStart)
    {
        if (_pos + digits > _src.Length ||
            !int.TryParse(_src.AsSpan(_pos, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int code) ||
            !Rune.IsValid(code))
            throw At(literalStart).Syntax($"invalid \\{(digits == 2 ? 'x' : digits == 4 ? 'u' : 'U')} escape in a string literal");
        _pos += digits;
        return char.ConvertFromUtf32(code);
    }
}
