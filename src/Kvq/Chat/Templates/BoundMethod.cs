namespace Kvq.Chat.Templates;

/// <summary>A method looked up on a value ("text.strip", "message.items") waiting for its call.</summary>
internal sealed record BoundMethod(object Receiver, string Name);
