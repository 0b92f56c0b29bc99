namespace Kvq.Serving;

/// <summary>One generated token as it streams out of the engine.</summary>
/// <param name="Index">0 for the first generated token.</param>
/// <param name="Text">Text that became final with this token (may be empty while a multi-byte character or a
/// possible stop string is pending).</param>
/// <param name="Elapsed">Time since the request was submitted.</param>
/// <param name="Logprob">Natural log-probability of the token, when asked for; else NaN.</param>
/// <param name="TopLogprobs">The most likely tokens at this step with their log-probabilities, when asked for.</param>
public sealed record TokenEvent(int Index, int Token, string Text, TimeSpan Elapsed, float Logprob,
    IReadOnlyList<TokenLogprob>? TopLogprobs = null);

public readonly record struct TokenLogprob(int Token, string Text, float Logprob);
