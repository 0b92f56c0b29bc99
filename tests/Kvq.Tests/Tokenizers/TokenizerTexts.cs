namespace Kvq.Tests.Tokenizers;

/// <summary>Texts the tokenizer tests run on: every file under shared/text, and hand-picked edge cases.</summary>
internal static class TokenizerTexts
{
    /// <summary>Every text file under shared/text, as paths relative to it.</summary>
    public static TheoryData<string> Files()
    {
        var root = Fixtures.Text("");
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(root, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            data.Add(Path.GetRelativePath(root, f));
        return data;
    }

    /// <summary>A whole text file as evaluation reads it: BOM dropped, CRLF turned into LF.</summary>
    public static string Read(string relative) => TextFixtures.Read(Fixtures.Text(relative));

    public static readonly string[] EdgeCases =
    [
        "",
        " ",
        "  ",
        "   leading and trailing spaces   ",
        "\n",
        "\n\n\n",
        "\r\n",
        "\t tab\tand\u00A0no-break\u3000ideographic space",
        "line one\nline two\n\n  indented\n",
        "Hello world",
        " Hello world",
        "It's a dog's life, isn't it? They'll say we'd've; YOU'RE, I'M, he'S",
        "0 1 12 123 1234 12345 123456789 3.14159 1,000,000 -42 +7 1e-5",
        "٣٤٥ ١٢ ²³ ½ Ⅻ",                                   // non-ASCII digits and numbers
        "emoji 😀👍🏽👨‍👩‍👧 and 🇫🇷 flags",
        "中文字符测试，日本語のテキスト、한국어 텍스트。",
        "𝐀𝐁𝐂 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀𠀁 (letters outside the BMP)",
        "Ünïcödé àçcéñts, combining: e\u0301 a\u0308, ligature ﬁ, ǅ",
        "Ελληνικά, русский текст, עברית, العربية, हिन्दी",
        "<s>",
        "a<s>b</s>c<unk>d",
        "<|endoftext|> <|im_start|>user\nhi<|im_end|>",
        "[USER] said [USER]",
        "<0x41><0x0A>",
        "▁ already ▁ escaped ▁▁",
        "punctuation!!! ??? ... --- ;;; ::: \"quotes\" 'single' (parens) [brackets] {braces}",
        "$100 + 5% = <tag> ^caret~ |pipe| `tick` @at #hash &amp",
        "tabs\tand\vvertical\fform feeds\u0085next line\u2028line sep",
        "control \u0001\u0002\u001b chars and \u200B zero width \uFEFF bom",
        "private use \uE000 and unassigned \u0378 code points",
        new string('a', 300),
        new string(' ', 100) + "x",
        "MiXeD CaSe WoRdS with CamelCaseIdentifiers and snake_case_names",
        "https://example.com/path?query=1&other=two#frag user@example.org",
        "    def f(x):\n        return x ** 2  # comment\n",
    ];

    public static TheoryData<int> EdgeCaseIndices()
    {
        var data = new TheoryData<int>();
        for (int i = 0; i < EdgeCases.Length; i++) data.Add(i);
        return data;
    }
}
