namespace Kvq.Model;

/// <summary>A model whose architecture (or one of its operators) a backend or tool does not implement: the CUDA
/// backend or the calibration's backward pass meeting a mixture-of-experts layer, for example.</summary>
public sealed class UnsupportedArchitectureException(string message) : NotSupportedException(message);
