namespace Kvq.Chat;

/// <summary>One message of a conversation, as chat templates see it: messages[i].role and messages[i].content.</summary>
/// <param name="Role">"system", "user", "assistant" or "tool" (templates decide what they accept).</param>
public sealed record ChatMessage(string Role, string Content);
