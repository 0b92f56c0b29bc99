namespace Kvq.Formats.Safetensors;

/// <summary>The file names of a Hugging Face model folder (transformers' conventions), for whoever reads one: the model
/// sniffer, the tokenizer loader and the model loader.</summary>
public static class HfFolder
{
    public const string ConfigFileName = "config.json";
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";
    public const string TokenizerFileName = "tokenizer.json";
    public const string TokenizerConfigFileName = "tokenizer_config.json";
}
