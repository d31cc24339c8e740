import { mount } from "svelte";

import Generate from "./Generate.svelte";

mount(Generate, { target: document.getElementById("app")! });
