import { createRoot } from "react-dom/client";

import { Generate } from "./Generate.js";

createRoot(document.getElementById("app")!).render(<Generate />);
