namespace Kvq.Eval;

/// <summary>
/// One long-context retrieval prompt (passkey, needle): filler with a needle sentence at a depth, a question at the end.
/// </summary>
/// <param name="Tokens">The prompt's tokens, BOS first when the model adds one.</param>
/// <param name="Answer">What the model should produce right after the prompt.</param>
/// <param name="NeedleToken">Index in <paramref name="Tokens"/> of the needle sentence's first token.</param>
/// <param name="Length">The length asked for; the prompt is the longest that fits in it.</param>
/// <param name="Depth">The depth asked for: 0 = needle right after the start, 1 = right before the question.</param>
/// <param name="Trial">Which trial (seeded key / text position) this is.</param>
public sealed record RetrievalPrompt(string Text, int[] Tokens, string Answer, int NeedleToken, int Length, double Depth, int Trial)
{
    /// <summary>Where the needle actually starts, as a fraction of the prompt's tokens.</summary>
    public double NeedleDepth => Tokens.Length == 0 ? 0 : NeedleToken / (double)Tokens.Length;
}
