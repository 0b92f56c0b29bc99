using System.Text;
using Kvq.Eval;
using Kvq.Tokenizers;

namespace Kvq.Tests.Eval;

/// <summary>Passkey and needle prompts: structure, length budget, depth placement, and exact-match scoring.</summary>
public class RetrievalPromptTests
{
    private static ITokenizer Tok => EvalFixtures.Books.Tokenizer;

    private static string Decode(ITokenizer tok, ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>();
        foreach (int id in ids) bytes.AddRange(tok.TokenBytes(id).ToArray());
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private static int Count(string text, string part)
    {
        int n = 0;
        for (int i = text.IndexOf(part, StringComparison.Ordinal); i >= 0; i = text.IndexOf(part, i + 1, StringComparison.Ordinal)) n++;
        return n;
    }

    [Theory]
    [InlineData(512, 0.0)]
    [InlineData(512, 0.5)]
    [InlineData(1024, 0.25)]
    [InlineData(1024, 1.0)]
    public void PasskeyPromptHasTheKeyAtTheDepthAndFitsTheLength(int length, double depth)
    {
        var task = new PasskeyTask(Tok);
        var p = task.Build(length, depth, trial: 2, seed: 5);
        int key = PasskeyTask.Key(5, 2);
        Assert.Equal(key.ToString(), p.Answer);
        Assert.InRange(key, 10_000, 99_999);
        Assert.StartsWith(PasskeyTask.Task + "\n", p.Text);
        Assert.EndsWith("\n" + PasskeyTask.Question, p.Text);
        Assert.Equal(1, Count(p.Text, PasskeyTask.KeyLine(key)));
        Assert.Equal(2, Count(p.Text, key.ToString())); // "The pass key is N. Remember it. N is the pass key." only
        // The longest prompt that fits: one more filler sentence would not.
        Assert.True(p.Tokens.Length <= length);
        int units = Count(p.Text, PasskeyTask.Filler);
        int unitTokens = Tok.Encode(" " + PasskeyTask.Filler, false).Length;
        Assert.True(p.Tokens.Length > length - unitTokens - 2, $"{p.Tokens.Length} tokens for a budget of {length} ({unitTokens} per filler)");
        // round(depth x units) filler sentences before the key line.
        int before = Count(p.Text[..p.Text.IndexOf(PasskeyTask.KeyLine(key), StringComparison.Ordinal)], PasskeyTask.Filler);
        Assert.Equal((int)Math.Round(depth * units, MidpointRounding.AwayFromZero), before);
        // NeedleToken points at the key line's first token in the prompt's own tokens.
        Assert.StartsWith("The pass key is", Decode(Tok, p.Tokens.AsSpan(p.NeedleToken)).TrimStart());
        Assert.DoesNotContain("The pass key is " + key, Decode(Tok, p.Tokens.AsSpan(0, p.NeedleToken)));
        Assert.Equal(p.NeedleToken / (double)p.Tokens.Length, p.NeedleDepth);
        Assert.Equal(Tok.BosId, p.Tokens[0]);
        // Same trial, same key; the tokens are those of the text.
        Assert.Equal(Tok.Encode(p.Text, true), p.Tokens);
        Assert.Equal(p.Text, task.Build(length, depth, 2, 5).Text);
    }

    [Fact]
    public void PasskeyDepthMovesTheKeyMonotonically()
    {
        var task = new PasskeyTask(Tok);
        var depths = new[] { 0.0, 0.25, 0.5, 0.75, 1.0 }.Select(d => task.Build(1024, d, 0, 1).NeedleDepth).ToArray();
        for (int i = 1; i < depths.Length; i++) Assert.True(depths[i] > depths[i - 1], string.Join(", ", depths));
        Assert.True(depths[0] < 0.1 && depths[^1] > 0.9, string.Join(", ", depths));
        Assert.Throws<ArgumentException>(() => task.Build(20, 0.5, 0, 1)); // not even the key line and question fit
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.5)]
    [InlineData(1.0)]
    public void NeedleIsASentenceOfItsOwnInBookText(double depth)
    {
        var task = new NeedleTask(Tok, EvalFixtures.MobyDick);
        var p = task.Build(768, depth, trial: 1, seed: 3);
        string name = NeedleTask.NameFor(3, 1);
        string needle = NeedleTask.NeedleSentence(name);
        Assert.Equal(name, p.Answer);
        Assert.Equal(1, Count(p.Text, needle));
        Assert.EndsWith("\n\n" + NeedleTask.Question, p.Text);
        Assert.True(p.Tokens.Length <= 768 && p.Tokens.Length > 700, $"{p.Tokens.Length} tokens");
        // Without the needle, the haystack is a verbatim run of the book, starting at a sentence.
        int at = p.Text.IndexOf(needle, StringComparison.Ordinal);
        string before = p.Text[..at], after = p.Text[(at + needle.Length)..^(NeedleTask.Question.Length + 2)];
        string haystack = before.TrimEnd(' ') + after;
        Assert.Contains(haystack, EvalFixtures.MobyDick);
        if (depth == 0) Assert.Equal(0, at);
        if (depth == 1) Assert.Equal("", after);
        if (depth > 0) Assert.Matches("[.!?][\"')\u201D\u2019]*$", before.TrimEnd(' ')); // after a sentence's end
        // Token position of the needle.
        Assert.StartsWith("The secret ingredient", Decode(Tok, p.Tokens.AsSpan(p.NeedleToken)).TrimStart());
        Assert.InRange(p.NeedleDepth, depth - 0.25, depth + 0.1);
    }

    [Fact]
    public void SentenceEndsFollowTerminatorsAndQuotes()
    {
        const string text = "Call me Ishmael. Some years ago! \"Never mind how long.\" Then 3.5 miles? Yes";
        var ends = NeedleTask.SentenceEnds(text);
        Assert.Equal(["Call me Ishmael.", " Some years ago!", " \"Never mind how long.\"", " Then 3.5 miles?"],
            ends.Select((e, i) => text[(i == 0 ? 0 : ends[i - 1])..e]).ToArray());
    }

    [Theory]
    [InlineData(" 73665. Remember", "73665", true)]
    [InlineData("73665", "73665", true)]
    [InlineData(" 7366. 73665", "73665", false)]  // the first number counts
    [InlineData(" 736650", "73665", false)]
    [InlineData(" the key", "73665", false)]
    public void PasskeyScoringIsExactMatchOfTheFirstNumber(string output, string answer, bool correct) =>
        Assert.Equal(correct, new PasskeyTask(Tok).IsCorrect(output, answer));

    [Theory]
    [InlineData(" 73665. Remember", 1.0)]
    [InlineData(" 7400. The wind", 0.2)]
    [InlineData(" 73. 73665", 0.4)]
    [InlineData(" 736650", 1.0)]  // all of the key's digits, though not an exact match
    [InlineData(" gold. The sky", 0.0)]
    public void PasskeyPrefixMatchCountsLeadingDigits(string output, double expected) =>
        Assert.Equal(expected, new PasskeyTask(Tok).PrefixMatch(output, "73665"), 12);

    [Theory]
    [InlineData(" Saffron.", 1.0)]
    [InlineData(" saffire", 4.0 / 7)]   // s-a-f-f of s-a-f-f-r-o-n
    [InlineData(" a pinch", 0.0)]
    public void NeedlePrefixMatchCountsLeadingLetters(string output, double expected) =>
        Assert.Equal(expected, new NeedleTask(Tok, EvalFixtures.MobyDick).PrefixMatch(output, "saffron"), 12);

    [Theory]
    [InlineData(" saffron.\n\n\"I", "saffron", true)]
    [InlineData(" Saffron", "saffron", true)]
    [InlineData(" saffrons", "saffron", false)]
    [InlineData(" a pinch of saffron", "saffron", false)]
    [InlineData("", "saffron", false)]
    public void NeedleScoringIsExactMatchOfTheFirstWord(string output, string answer, bool correct) =>
        Assert.Equal(correct, new NeedleTask(Tok, EvalFixtures.MobyDick).IsCorrect(output, answer));
}
